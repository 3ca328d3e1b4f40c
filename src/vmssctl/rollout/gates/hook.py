"""The command hook gate: run a command per instance (its fields also as ``VMSSCTL_*`` variables); exit 0
passes, anything else keeps waiting."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from typing import ClassVar

from vmssctl import inputs
from vmssctl.model import Instance
from vmssctl.rollout.gates.base import GOOD, WAIT, Context, Verdict, fields, fill
from vmssctl.rollout.gates.registry import Deps, register


@register
@dataclass
class HookGate:
    command: str
    kind: ClassVar[str] = "hook"
    settings: ClassVar[frozenset[str]] = frozenset({"command"})

    @classmethod
    def from_spec(cls, spec: dict, what: str, deps: Deps) -> HookGate:
        return cls(inputs.text(spec.get("command"), f"{what} command"))

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]:
        out = {}
        for inst in instances:
            f = fields(ctx, inst)
            cmd = fill(self.command, f)
            env = {**os.environ, **{f"VMSSCTL_{k.upper()}": str(v) for k, v in f.items()}}
            try:
                r = subprocess.run(cmd, shell=True, env=env, capture_output=True, timeout=120)
            except subprocess.TimeoutExpired:
                out[inst.instance_id] = Verdict(WAIT, f"hook '{cmd}' timed out")
                continue
            out[inst.instance_id] = Verdict(GOOD) if r.returncode == 0 else \
                Verdict(WAIT, f"hook '{cmd}' exited {r.returncode}")
        return out
