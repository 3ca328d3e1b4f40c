"""Rollouts: the engine that upgrades a scale set batch by batch, its journal, gates and events."""
