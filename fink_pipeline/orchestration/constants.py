"""Names shared across the Dagster definitions."""

TRANSFER_GROUP = "transfer"
ARCHIVE_GROUP = "archive"
OWNERS = ["team:fink-pipeline"]
