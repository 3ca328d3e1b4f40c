"""Microsoft.Network, the parts traffic flows through: load balancers (their frontends, backend pools, probes and
rules), which scale sets' VMs join through their NIC configurations, each backend's probe state on the
emulator's clock and its admin state. A resource type per module, bound to the world as the Compute ones are.
"""
