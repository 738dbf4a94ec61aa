"""Partition definitions, shared by assets, jobs, sensors and schedules."""

import dagster as dg

# One partition per submitted transfer; the key is the transfer's topic name.
transfer_partitions = dg.DynamicPartitionsDefinition(name="transfer_requests")

# One partition per UTC night of the archive, from the first night Fink archived ZTF alerts;
# the key is the night, YYYY-MM-DD (the last partition is yesterday, the last complete night).
night_partitions = dg.DailyPartitionsDefinition(start_date="2019-11-01")
