"""How long things take in simulated seconds, before jitter and slowness faults.

Figures are typical of a Linux scale-set VM with a managed OS disk: an upgrade stops
the VM, swaps the OS disk, boots it, and only then does the Application Health
extension start its grace period.
"""

from __future__ import annotations

import re

STOP = 20.0
REIMAGE = 60.0
BOOT = 40.0
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
