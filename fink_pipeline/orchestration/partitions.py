"""Partition definitions, shared by assets, jobs, sensors and schedules."""

import dagster as dg

# One partition per submitted transfer; the key is the transfer's topic name.
transfer_partitions = dg.DynamicPartitionsDefinition(name="transfer_requests")
