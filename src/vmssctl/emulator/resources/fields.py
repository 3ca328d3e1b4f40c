"""How ARM reads a resource's fields and preconditions, shared by the resource types."""

from __future__ import annotations

import copy
import hashlib
import json
import re

from vmssctl import inputs
from vmssctl.emulator.errors import ArmError, invalid

READ_ONLY = ("provisioningState", "uniqueId", "timeCreated", "exactVersion")  # at any depth

SetKey = tuple[str, str]


def key(rg: str, name: str) -> SetKey:
    """A scale set's key: its group and name, compared without case as ARM does."""
    return (rg.lower(), name.lower())


def strip_read_only(node: object) -> object:
    """A client's body without what only the server sets (at any depth)."""
    if isinstance(node, dict):
        return {k: strip_read_only(v) for k, v in node.items() if k not in READ_ONLY}
    if isinstance(node, list):
        return [strip_read_only(v) for v in node]
    return node


def merge(base: dict, patch: dict) -> dict:
    """ARM PATCH semantics: objects merge recursively, arrays and scalars replace, null removes."""
    out = dict(base)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def instance_number(raw: object) -> int | None:
    """An instance id as ARM spells it (ASCII digits), else None (no such instance)."""
    text = str(raw) if isinstance(raw, str | int) and not isinstance(raw, bool) else ""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


def region(location: str) -> str:
    """A location as ARM compares them: 'West Europe' is 'westeurope'."""
    return location.lower().replace(" ", "")


def check_location(location: object) -> None:
    if not isinstance(location, str) or not re.fullmatch(r"[A-Za-z0-9 ]{1,64}", location):
        raise invalid(f"The location '{inputs.shown(location)}' is not a valid Azure location name.", "location")


def digest(obj: object) -> str:
    """A short, stable fingerprint of a JSON value (a model, to tell which VMs run the latest one)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def check_etag(current: int | None, if_match: str | None, if_none_match: str | None) -> None:
    """If-Match / If-None-Match against a resource's etag (None: the resource does not exist)."""
    tag = f'"{current}"' if current is not None else None
    if if_match is not None:  # (Network's etags are weak, W/"n": a client sends back what it read)
        wanted = [t.strip().removeprefix("W/") for t in if_match.split(",")]
        if tag is None or ("*" not in wanted and tag not in wanted and str(current) not in wanted):
            raise ArmError(412, "PreconditionFailed",
                           "The specified precondition 'If-Match' failed: the resource changed "
                           f"(current etag {tag or 'none: resource does not exist'}).")
    if if_none_match is not None and tag is not None:
        wanted = [t.strip() for t in if_none_match.split(",")]
        if "*" in wanted or tag in wanted:
            raise ArmError(412, "PreconditionFailed",
                           f"The specified precondition 'If-None-Match' failed (current etag {tag}).")
