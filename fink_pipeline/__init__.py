"""fink-pipeline: an orchestrated re-implementation and superset of Fink's Data Transfer service."""

__version__ = "0.1.0"
