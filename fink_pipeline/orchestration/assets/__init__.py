"""Asset modules, grouped by domain."""
