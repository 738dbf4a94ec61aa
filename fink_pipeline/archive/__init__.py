"""The night-partitioned alert archive: layout (`layout`) and synthetic generation (`generate`).

Kept import-free so that importing one submodule does not pull the others' dependencies.
"""
