"""What Network's resources (load balancers, Application Gateways) check and write alike: bounded integers,
references to a child by id, and a stable resource GUID."""

from __future__ import annotations

import zlib
from typing import Any

from vmssctl.emulator.errors import invalid


def number(p: dict, field_name: str, low: int, high: int, owner: str, required: bool = False) -> None:
    """``p[field_name]`` is an integer from ``low`` to ``high`` (or absent, when not ``required``)."""
    v = p.get(field_name)
    if v is None and not required:
        return
    if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
        raise invalid(f"{owner}: {field_name} must be an integer from {low} to {high}.", field_name)


def ref_name(ref: Any) -> str:
    """The name a reference (``{"id": ".../kind/name"}``) points at ("" when it is no reference)."""
    return str((ref or {}).get("id", "")).rstrip("/").rsplit("/", 1)[-1] if isinstance(ref, dict | None) else ""


def guid(rid: str, name: str) -> str:
    """A resource's ``resourceGuid``: stable for its id and name."""
    return f"{zlib.crc32(rid.lower().encode()):08x}-0000-4000-8000-{zlib.crc32(name.encode()):012x}"
