"""Fleets: one image to many scale sets, in stages, on a durable-execution engine (DBOS)."""

DEFAULT_MAX_SETS = 500  # the most scale sets a fleet selects unless --max-sets says more
HIGHEST_MAX_SETS = 5000
