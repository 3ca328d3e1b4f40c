"""A local emulator of the Azure Resource Manager API for VM Scale Sets.

Layered as moto is: ``world`` holds state and simulation (no HTTP), ``arm`` maps the
wire protocol onto it, ``server`` runs it over TLS.
"""

DEMO_NEW = "24.04.202611200"  # the new version `make demo` moves to: published in the demo's catalogue (server.py)
