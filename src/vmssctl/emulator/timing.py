"""How long things take in simulated seconds, before jitter (±20 %) and slowness faults.

An upgrade or reimage stops the VM, swaps the OS disk and boots it; only then does the Application
Health extension start its grace period. Where a figure was measured on real Azure, the source:

| step                         | seconds | source                                                                  |
|------------------------------|---------|-------------------------------------------------------------------------|
| STOP + REIMAGE + BOOT        | 90      | az CLI recording test_vmss_reimage.yaml (Azure/azure-cli, 2021, westus, |
|                              |         | Standard_DS1_v2, CentOS): reimage of one VM 86.7 s, of the whole 2-VM   |
|                              |         | set 94.6 s (operation startTime → endTime); see tests/replay/           |
| CREATE                       | 90      | typical; the same recording's 2-VM set deployment took ~125 s with its  |
|                              |         | network                                                                 |
| DELETE, DEALLOCATE, REDEPLOY | 30/30/120 | typical, not measured here                                            |

Until 2026-11 the upgrade took 120 s (20 + 60 + 40), 1.3-1.4x the recorded reimages.
"""

from __future__ import annotations

import re

STOP = 10.0
REIMAGE = 45.0
BOOT = 35.0
CREATE = 90.0
DELETE = 30.0
DEALLOCATE = 30.0
REDEPLOY = 120.0
MODEL_UPDATE = 5.0
HEALTH_GRACE = 60.0  # Application Health extension's grace period when its settings give none
JITTER = 0.2  # durations vary +/- 20 %, from a seeded generator
ROLLING_POLL = 10.0  # how often the built-in rolling upgrade re-checks a batch
LRO_POLL = 30.0  # the Retry-After Compute suggests, before scaling to real seconds

_UPGRADE = [(STOP, ["stopped"]), (REIMAGE, ["apply", "starting"]), (BOOT, ["booted"])]
# What each instance operation does: (power, provisioning state at once, then [(seconds, steps at their end)]).
# The world applies the steps: "apply" puts the new image on, "booted" ends the operation's provisioning,
# "done" ends one that does not boot, "gone" removes the VM.
SCRIPTS: dict[str, tuple[str, str, list[tuple[float, list[str]]]]] = {
    "create": ("starting", "Creating", [(CREATE, ["apply", "booted"])]),
    "upgrade": ("stopping", "Updating", _UPGRADE),
    "reimage": ("stopping", "Updating", _UPGRADE),
    "redeploy": ("stopping", "Updating", [(STOP, ["stopped"]), (REDEPLOY, ["apply", "starting"]), (BOOT, ["booted"])]),
    "restart": ("stopping", "Updating", [(STOP, ["starting"]), (BOOT, ["booted"])]),
    "start": ("starting", "Updating", [(BOOT, ["booted"])]),
    "poweroff": ("stopping", "Updating", [(STOP, ["stopped", "done"])]),
    "deallocate": ("stopping", "Updating", [(STOP, ["deallocating"]), (DEALLOCATE, ["deallocated", "done"])]),
    "delete": ("stopping", "Deleting", [(DELETE, ["gone"])]),
}

_DURATION_RE = re.compile(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$", re.I)


def upgrade_seconds() -> float:
    """The nominal time from manualupgrade to a running VM (the LRO's length)."""
    return STOP + REIMAGE + BOOT


def parse_iso_duration(text: str) -> float:
    """``PT2M30S`` → 150.0; raises ValueError on anything ARM would refuse."""
    m = _DURATION_RE.match(text or "")
    if not m or text.upper() in ("P", "PT"):
        raise ValueError(f"'{text}' is not an ISO 8601 duration such as PT0S or PT2M")
    d, h, mi, s = m.groups()
    return int(d or 0) * 86400 + int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)
