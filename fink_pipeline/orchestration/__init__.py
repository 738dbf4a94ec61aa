"""Dagster wiring (assets, resources, partitions, checks, sensors, schedules), kept thin."""
