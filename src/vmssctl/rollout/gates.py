"""Is an upgraded instance good? ARM's view first, then optional HTTP probe and command hook.

A verdict is ``good``, ``bad`` (with a reason naming ARM's code where there is one) or
``wait``: ``initializing`` health, an upgrade still running, or a gate not yet passing
all mean wait, until the health timeout turns them into ``bad``. Failed provisioning and
``unhealthy`` (reported only after the extension's grace period) are ``bad`` at once.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass

from vmssctl.model import Instance

GOOD, BAD, WAIT = "good", "bad", "wait"


@dataclass(frozen=True)
class Verdict:
    state: str
    reason: str | None = None


@dataclass(frozen=True)
class Gates:
    probe_url: str | None = None  # template: {instance_id}, {computer_name}, {resource_group}, {name}
    hook: str | None = None  # shell command, same template fields; exit 0 = pass
    resource_group: str = ""
    name: str = ""

    def _fields(self, inst: Instance) -> dict:
        return {"instance_id": inst.instance_id, "resource_group": self.resource_group, "name": self.name,
                "update_domain": inst.update_domain, "fault_domain": inst.fault_domain, "zone": inst.zone or ""}

    def extra(self, inst: Instance) -> str | None:
        """None when every configured gate passes, else why not."""
        fields = self._fields(inst)
        if self.probe_url:
            url = self.probe_url.format(**fields)
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if not 200 <= r.status < 300:
                        return f"probe {url} answered {r.status}"
            except urllib.error.HTTPError as e:
                return f"probe {url} answered {e.code} {e.reason}"
            except (urllib.error.URLError, OSError, ValueError) as e:
                return f"probe {url} failed: {getattr(e, 'reason', e)}"
        if self.hook:
            cmd = self.hook.format(**fields)
            env = {**os.environ, **{f"VMSSCTL_{k.upper()}": str(v) for k, v in fields.items()}}
            try:
                r = subprocess.run(cmd, shell=True, env=env, capture_output=True, timeout=120)
            except subprocess.TimeoutExpired:
                return f"hook '{cmd}' timed out"
            if r.returncode != 0:
                return f"hook '{cmd}' exited {r.returncode}"
        return None


def judge(inst: Instance, on_target: bool, elapsed: float, timeout: float, gates: Gates) -> Verdict:
    late = elapsed >= timeout
    if inst.provisioning == "failed":
        return Verdict(BAD, inst.error or "provisioning failed")
    if not on_target or inst.provisioning != "succeeded" or inst.power != "running":
        return Verdict(BAD, f"still {inst.provisioning}/{inst.power} after {timeout:.0f}s") if late else Verdict(WAIT)
    if inst.health == "unhealthy":
        # the Application Health extension says 'initializing' through its grace period, so 'unhealthy' on an
        # upgraded, running VM is a verdict already: fail the batch now, not when the health timeout runs out
        return Verdict(BAD, "HealthState/unhealthy after the health extension's grace period")
    if inst.health not in (None, "healthy"):
        if late:
            return Verdict(BAD, f"HealthState/{inst.health} after {timeout:.0f}s")
        return Verdict(WAIT)
    why = gates.extra(inst) if (gates.probe_url or gates.hook) else None
    if why:
        return Verdict(BAD, why) if late else Verdict(WAIT)
    return Verdict(GOOD)
