"""Catalogue cross-match: reader, sky index, Spark step."""
