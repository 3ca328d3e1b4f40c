"""Is an upgraded instance good? ARM's view first, then the gates the policy declares.

ARM's view (``judge``): failed provisioning is ``bad`` at once; an upgrade still running, or ``initializing``
health, is ``wait``; ``unhealthy`` (reported only after the Application Health extension's grace period) is
``bad`` at once.

Then every gate of the policy, each a provider with one method, ``check`` (as Argo Rollouts' analysis
providers), one module each: an HTTP probe (``probe``), a command hook (``hook``), a Prometheus query
(``prometheus``), a web (JSON) check (``web``), users' failed requests over the batch (``requests``). A gate
answers per instance ``good``, ``wait`` (not passing yet: ``bad`` once the health timeout runs out) or ``bad``
(a definite failure, e.g. a Prometheus failure limit reached), and a bad gate fails the batch like an unhealthy
instance. A new provider is a module that registers a class (``registry.register``); the composition root
builds the policy's gates (``build``) with what they need (``Deps``) and hands them to the engine.
"""

from vmssctl.rollout.gates import (  # noqa: F401 - the built-in providers register
    hook,
    probe,
    prometheus,
    requests,
    web,
)
from vmssctl.rollout.gates.base import BAD, GOOD, WAIT, Context, Gate, Verdict, combine, fields, fill, judge
from vmssctl.rollout.gates.conditions import Condition
from vmssctl.rollout.gates.measure import GateError, Measured
from vmssctl.rollout.gates.registry import PROVIDERS, Deps, build, from_spec, kinds, register

__all__ = ["BAD", "GOOD", "PROVIDERS", "WAIT", "Condition", "Context", "Deps", "Gate", "GateError", "Measured",
           "Verdict", "build", "combine", "fields", "fill", "from_spec", "judge", "kinds", "register"]
