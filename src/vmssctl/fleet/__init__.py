"""Fleets: one image to many scale sets, in stages, on a durable-execution engine (DBOS)."""
