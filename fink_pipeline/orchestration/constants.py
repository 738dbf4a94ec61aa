"""Names shared across the Dagster definitions."""

TRANSFER_GROUP = "transfer"
ARCHIVE_GROUP = "archive"
OWNERS = ["team:fink-pipeline"]
# Run tag carrying the transfer topic (set by the submit op, read by the sensors).
TOPIC_TAG = "fink/topic"
