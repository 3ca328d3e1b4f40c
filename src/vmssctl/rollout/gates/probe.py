"""The HTTP probe gate: GET a URL per instance; a 2xx answer passes, anything else keeps waiting."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import ClassVar

from vmssctl.model import Instance
from vmssctl.rollout.gates.base import GOOD, WAIT, Context, Verdict, fields, fill, url
from vmssctl.rollout.gates.registry import Deps, register


@register
@dataclass
class ProbeGate:
    url: str
    kind: ClassVar[str] = "probe"
    settings: ClassVar[frozenset[str]] = frozenset({"url"})

    @classmethod
    def from_spec(cls, spec: dict, what: str, deps: Deps) -> ProbeGate:
        return cls(url(spec.get("url"), f"{what} url"))

    def check(self, ctx: Context, instances: list[Instance]) -> dict[str, Verdict]:
        out = {}
        for inst in instances:
            target = fill(self.url, fields(ctx, inst))
            try:
                with urllib.request.urlopen(target, timeout=5) as r:
                    out[inst.instance_id] = Verdict(GOOD) if 200 <= r.status < 300 else \
                        Verdict(WAIT, f"probe {target} answered {r.status}")
            except urllib.error.HTTPError as e:
                out[inst.instance_id] = Verdict(WAIT, f"probe {target} answered {e.code} {e.reason}")
            except (urllib.error.URLError, OSError, ValueError) as e:
                out[inst.instance_id] = Verdict(WAIT, f"probe {target} failed: {getattr(e, 'reason', e)}")
        return out
