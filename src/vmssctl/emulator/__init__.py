"""A local emulator of the Azure Resource Manager API for VM Scale Sets.

Layered as moto is: ``world`` holds state and simulation (no HTTP), ``arm`` maps the
wire protocol onto it, ``server`` runs it over TLS.
"""
