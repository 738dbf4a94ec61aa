"""Cross-match of alerts with a user catalogue of sources (Fink's fxmatch_ service)."""
