"""What ARM refuses before a request reaches a resource provider, and the bounds of the admin API.

Real ARM caps a request body (4 MB), accepts JSON only, limits tags (50 per resource,
names of 512 characters, values of 256) and resource names; a refused request changes
nothing and always comes back in ARM's error envelope. Doing the same here keeps one
bad client from breaking the emulator for every other (a NaN clock, a 50 MB tag served
on every GET, a state file that can no longer be written).
"""

from __future__ import annotations

import json
import math
import re

from vmssctl import inputs
from vmssctl.emulator import timing
from vmssctl.emulator.errors import ArmError, invalid

MAX_BODY_BYTES = 4 * 1024 * 1024  # ARM's request size limit
MAX_DEPTH = 64  # nesting deeper than any Compute body
MAX_TAGS, MAX_TAG_NAME, MAX_TAG_VALUE = 50, 512, 256
TAG_NAME_FORBIDDEN = set("<>%&\\?/") | {chr(c) for c in range(32)}
JSON_TYPES = ("application/json", "text/json")


def too_large(size: int) -> ArmError:
    return ArmError(413, "RequestEntityTooLarge",
                    f"The request content size {size} bytes exceeds the maximum allowed size of "
                    f"{MAX_BODY_BYTES} bytes.")


def check_content_type(header: str | None) -> None:
    media = (header or "").split(";", 1)[0].strip().lower()
    if media not in JSON_TYPES:
        raise ArmError(415, "UnsupportedMediaType",
                       f"The content media type '{inputs.shown(header or '')}' is not supported. "
                       "Only 'application/json' is supported.")


def _no_constant(name: str) -> float:
    raise ValueError(f"'{name}' is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is out of range")
    return value


def _int64(text: str) -> int:
    """An integer as ARM's deserialiser takes it: 64 bits at most (and what the emulator's store can encode)."""
    value = int(text)
    if not -(2**63) <= value < 2**64:
        raise ValueError(f"the integer {text[:20]} is out of range")
    return value


def parse_json(raw: bytes) -> object:
    """Strict JSON: no NaN or Infinity, finite numbers, 64-bit integers, bounded nesting; ArmError 400
    otherwise."""
    try:
        body = json.loads(raw, parse_constant=_no_constant, parse_float=_finite, parse_int=_int64)
    except RecursionError:
        body = None
        depth_error = True
    except (ValueError, UnicodeDecodeError) as e:
        raise ArmError(400, "InvalidRequestContent",
                       f"The request content was invalid and could not be deserialized: {str(e)[:200]}.") from None
    else:
        depth_error = _depth(body) > MAX_DEPTH
    if depth_error:
        raise ArmError(400, "InvalidRequestContent",
                       f"The request content was invalid: JSON nested deeper than {MAX_DEPTH} levels.")
    return body


def _depth(node: object) -> int:
    """Nesting depth, without recursion (a deep body must not blow the stack here either)."""
    deepest, stack = 0, [(node, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            return depth
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def check_tags(tags: object, target: str = "tags") -> dict[str, str]:
    """ARM's tag rules: an object of string values, at most 50, names ≤ 512 without <>%&\\?/, values ≤ 256."""
    if tags is None:
        return {}
    if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
        raise ArmError(400, "InvalidRequestContent",
                       "The request content was invalid and could not be deserialized: 'tags' must be an object "
                       "whose values are strings.", target)
    if len(tags) > MAX_TAGS:
        raise ArmError(400, "InvalidTagCount", f"The number of tags {len(tags)} exceeds the maximum of {MAX_TAGS}.",
                       target)
    for name, value in tags.items():
        if not name or len(name) > MAX_TAG_NAME or any(c in TAG_NAME_FORBIDDEN for c in name):
            raise ArmError(400, "InvalidTagNameCharacters",
                           f"The tag name '{inputs.shown(name)}' is empty, longer than {MAX_TAG_NAME} characters or "
                           "has one of the characters <, >, %, &, \\, ?, / or a control character.", target)
        if len(value) > MAX_TAG_VALUE:
            raise ArmError(400, "InvalidTagValueLength",
                           f"The value of tag '{inputs.shown(name)}' is {len(value)} characters; the maximum is "
                           f"{MAX_TAG_VALUE}.", target)
    return dict(tags)


def check_resource_group_name(name: str) -> None:
    if not inputs.is_resource_group_name(name):
        raise ArmError(400, "InvalidResourceGroup",
                       f"The provided resource group name '{inputs.shown(name)}' has these invalid characters or "
                       "length: it must be 1-90 letters, digits, '_', '-', '.', '(' or ')' and not end in '.'.")


def check_scale_set_name(name: str) -> None:
    if not inputs.is_scale_set_name(name):
        raise ArmError(400, "InvalidResourceName",
                       f"The resource name '{inputs.shown(name)}' is invalid: a scale set name is 1-64 ASCII letters, "
                       "digits, '.', '_' or '-', starts with a letter or digit and ends with one or '_'.")


def skiptoken(value: str | None) -> int:
    """Paging offsets are ours, ASCII digits; anything else is refused."""
    if value is None:
        return 0
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise invalid("The $skiptoken is not valid.", "$skiptoken")
    return int(value)


def number(body: dict, key: str, low: float, high: float) -> float:
    """A finite JSON number from an admin-API body, within bounds (ValueError → 400)."""
    value = body[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ValueError(f"{key} must be a number from {low:g} to {high:g}")
    return float(value)


# Where Compute's scale-set body has an object, a list or a string, as ARM's deserializer insists.
_SHAPE: dict[str, type] = {
    "sku": dict, "sku.name": str, "sku.tier": str, "location": str, "zones": list, "identity": dict, "plan": dict,
    "properties": dict, "properties.upgradePolicy": dict, "properties.upgradePolicy.mode": str,
    "properties.upgradePolicy.rollingUpgradePolicy": dict, "properties.orchestrationMode": str,
    "properties.virtualMachineProfile": dict, "properties.virtualMachineProfile.storageProfile": dict,
    "properties.virtualMachineProfile.storageProfile.imageReference": dict,
    "properties.virtualMachineProfile.storageProfile.osDisk": dict,
    "properties.virtualMachineProfile.storageProfile.osDisk.image": dict,
    "properties.virtualMachineProfile.storageProfile.osDisk.managedDisk": dict,
    "properties.virtualMachineProfile.storageProfile.dataDisks": list,
    "properties.virtualMachineProfile.osProfile": dict,
    "properties.virtualMachineProfile.networkProfile": dict,
    "properties.virtualMachineProfile.networkProfile.networkInterfaceConfigurations": list,
    "properties.virtualMachineProfile.extensionProfile": dict,
    "properties.virtualMachineProfile.extensionProfile.extensions": list,
}
_NAMES: dict[type, str] = {dict: "an object", list: "an array", str: "a string"}


# Where Compute's scale-set body has an integer. ARM's JSON binding also takes a string of decimal digits there
# (the azurerm library scales with {"sku": {"capacity": "12"}}); the value is then bounded as any other.
_INTEGERS = ("sku.capacity", "properties.platformFaultDomainCount",
             "properties.upgradePolicy.rollingUpgradePolicy.maxBatchInstancePercent",
             "properties.upgradePolicy.rollingUpgradePolicy.maxUnhealthyInstancePercent",
             "properties.upgradePolicy.rollingUpgradePolicy.maxUnhealthyUpgradedInstancePercent")
_DIGITS = re.compile(r"-?[0-9]{1,9}")


def coerce_integers(body: dict) -> None:
    """Turn numeric strings where Compute wants an integer into integers, as ARM's deserializer does."""
    for path in _INTEGERS:
        *parents, leaf = path.split(".")
        node: object = body
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and isinstance(node.get(leaf), str) and _DIGITS.fullmatch(node[leaf].strip()):
            node[leaf] = int(node[leaf].strip())


def check_shape(body: object) -> None:
    """Refuse a scale-set body whose parts have the wrong JSON type (a list where an object goes...)."""
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
    coerce_integers(body)
    for path, kind in _SHAPE.items():
        node: object = body
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None and not isinstance(node, kind):
            raise ArmError(400, "InvalidRequestContent",
                           f"The request content was invalid and could not be deserialized: '{path}' must be "
                           f"{_NAMES[kind]}.", path)
    for key in ("dataDisks", "extensions", "networkInterfaceConfigurations"):
        items = _find(body, key)
        if items is not None and not all(isinstance(i, dict) for i in items):
            raise ArmError(400, "InvalidRequestContent", f"Each item of '{key}' must be an object.", key)


def _find(body: dict, key: str) -> list | None:
    vmp = (body.get("properties") or {}).get("virtualMachineProfile") or {}
    for section in vmp.values():
        if isinstance(section, dict):
            for k, v in section.items():
                if k == key and isinstance(v, list):
                    return v
    return None


def check_flexible_fault_domains(props: dict) -> None:
    """A Flexible set names its fault domain count: 1 (max spreading), 2 or 3."""
    fdc = props.get("platformFaultDomainCount")
    if fdc is None:
        raise invalid("Required parameter 'platformFaultDomainCount' is missing (null): a Flexible scale "
                      "set needs 1 (max spreading) or a fixed count of 2 or 3.",
                      "properties.platformFaultDomainCount")
    if not isinstance(fdc, int) or isinstance(fdc, bool) or not 1 <= fdc <= 3:
        raise invalid("platformFaultDomainCount of a Flexible scale set must be 1, 2 or 3.",
                      "properties.platformFaultDomainCount")


def check_upgrade_policy(policy: dict) -> None:
    """The upgrade mode and the rolling upgrade policy's bounds, as Compute checks them."""
    if str(policy.get("mode", "Manual")).lower() not in ("manual", "automatic", "rolling"):
        raise invalid(f"The value '{policy.get('mode')}' of parameter 'upgradePolicy.mode' is invalid.",
                      "properties.upgradePolicy.mode")
    rolling = policy.get("rollingUpgradePolicy") or {}
    for k in ("maxBatchInstancePercent", "maxUnhealthyInstancePercent", "maxUnhealthyUpgradedInstancePercent"):
        v = rolling.get(k)
        low = 5 if k == "maxBatchInstancePercent" else 0
        if v is not None and (not isinstance(v, int) or not low <= v <= 100):
            raise invalid(f"The value of parameter 'rollingUpgradePolicy.{k}' must be from {low} to 100.",
                          f"properties.upgradePolicy.rollingUpgradePolicy.{k}")
    for k in ("maxSurge", "rollbackFailedInstancesOnPolicyBreach", "prioritizeUnhealthyInstances"):
        if k in rolling and not isinstance(rolling[k], bool):
            raise invalid(f"The value of parameter 'rollingUpgradePolicy.{k}' must be true or false.",
                          f"properties.upgradePolicy.rollingUpgradePolicy.{k}")
    if "pauseTimeBetweenBatches" in rolling:
        try:
            timing.parse_iso_duration(rolling["pauseTimeBetweenBatches"])
        except ValueError as e:
            raise invalid(str(e), "properties.upgradePolicy.rollingUpgradePolicy.pauseTimeBetweenBatches") from None


NETWORK_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9_])?")


def check_network_name(name: str, what: str) -> None:
    """Microsoft.Network's resource names: 1 to 80 letters, digits, '.', '-', '_'; starting with a letter or digit
    and ending with one or '_'."""
    if not NETWORK_NAME.fullmatch(name):
        raise invalid(f"The {what} name '{inputs.shown(name)}' is invalid: 1 to 80 letters, digits, '.', '-' and "
                      "'_', starting with a letter or digit and ending with one or '_'.", "name")

