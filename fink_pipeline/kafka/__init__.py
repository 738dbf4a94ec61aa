"""Kafka side of the pipeline: embedded broker, connection settings, topics, status protocol.

Kept import-free so that `import fink_pipeline.kafka.settings` does not start anything heavy.
"""
