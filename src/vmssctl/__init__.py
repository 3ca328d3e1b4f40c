"""vmssctl: zero-downtime OS image upgrades for Azure VM Scale Sets."""

__version__ = "0.2.0"
