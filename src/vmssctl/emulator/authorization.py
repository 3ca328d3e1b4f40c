"""Who may do what: the emulator's stand-in for Azure RBAC.

Every token the emulator issued may do everything except the actions a test denies (``/_emulator/permissions``):
a denied action is refused as ARM refuses it (403 ``AuthorizationFailed``, naming the action and the scope), and
the permissions API (``…/providers/Microsoft.Authorization/permissions``) tells a caller what it may do without
trying, as ``Get-AzRoleAssignment``-free tools (and vmssctl's plan) ask Azure. An HTTP concern: the in-process
gateways are the owner's own hands and are never refused.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

PRINCIPAL = str(uuid.UUID(int=1))  # the object id in the tokens the emulator mints
MAX_DENIED = 100
ACTION = re.compile(r"^[A-Za-z][A-Za-z0-9.]*(/[A-Za-z0-9.*]+)+$")


@dataclass
class Authorization:
    """The actions refused to every caller (case-insensitive; ``*`` matches within and across segments, as an
    RBAC role's ``notActions`` do)."""

    denied: list[str] = field(default_factory=list)

    def update(self, body: dict) -> None:
        """``{"deny": [action, ...]}``: replaces the denied actions; refused whole when one is malformed."""
        deny = body.get("deny", [])
        if not isinstance(deny, list) or len(deny) > MAX_DENIED:
            raise ValueError(f"deny must be a list of at most {MAX_DENIED} actions")
        for action in deny:
            if not isinstance(action, str) or len(action) > 256 or not ACTION.match(action):
                raise ValueError(f"'{str(action)[:80]}' is not an action such as "
                                 "Microsoft.Network/loadBalancers/backendAddressPools/write")
        self.denied = list(deny)

    def allows(self, action: str) -> bool:
        low = action.lower()
        return not any(fnmatchcase(low, d.lower()) for d in self.denied)

    def permissions(self) -> dict:
        """What the permissions API answers at any scope: everything, but the denied actions."""
        return {"value": [{"actions": ["*"], "notActions": list(self.denied), "dataActions": [],
                           "notDataActions": []}]}

    def to_json(self) -> dict:
        return {"deny": list(self.denied)}


def action_of(method: str, segs: list[str]) -> str:
    """The RBAC action a request needs: the resource types of its path after the last provider namespace, then
    read, write, delete, or (a POST) the operation's name and ``action``."""
    low = [s.lower() for s in segs]
    if "providers" in low:
        at = len(low) - 1 - low[::-1].index("providers")
        namespace, rest = segs[at + 1] if at + 1 < len(segs) else "", segs[at + 2:]
    else:  # subscriptions and resource groups
        namespace, rest = "Microsoft.Resources", ["subscriptions", *segs[1:2], *segs[2:]]
    types, operation = rest[0::2], None
    if method == "POST" and len(rest) % 2 == 1:
        types, operation = rest[:-1][0::2], rest[-1]
    verb = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(method, "action")
    return "/".join([namespace, *types, *([operation, "action"] if operation else [verb])])


def scope_of(segs: list[str]) -> str:
    """The resource a request is on (what an AuthorizationFailed names as its scope)."""
    low = [s.lower() for s in segs]
    if "providers" in low:
        at = len(low) - 1 - low[::-1].index("providers")
        rest = segs[at + 2:]
        return "/" + "/".join(segs[:at + 2] + rest[:len(rest) - len(rest) % 2])
    return "/" + "/".join(segs[:4])


# A write naming another resource by id joins it (a NIC to a subnet, a VM to a pool): ARM's linked access check
# asks the caller for the join action on each resource the body names, as RBAC names them.
JOINS = (
    (re.compile(r"/providers/microsoft\.network/virtualnetworks/[^/]+/subnets/[^/]+$", re.I),
     "Microsoft.Network/virtualNetworks/subnets/join/action"),
    (re.compile(r"/providers/microsoft\.network/loadbalancers/[^/]+/backendaddresspools/[^/]+$", re.I),
     "Microsoft.Network/loadBalancers/backendAddressPools/join/action"),
    (re.compile(r"/providers/microsoft\.network/loadbalancers/[^/]+/inboundnatpools/[^/]+$", re.I),
     "Microsoft.Network/loadBalancers/inboundNatPools/join/action"),
    (re.compile(r"/providers/microsoft\.network/loadbalancers/[^/]+/probes/[^/]+$", re.I),
     "Microsoft.Network/loadBalancers/probes/join/action"),
    (re.compile(r"/providers/microsoft\.network/applicationgateways/[^/]+/backendaddresspools/[^/]+$", re.I),
     "Microsoft.Network/applicationGateways/backendAddressPools/join/action"),
)


def linked(body: object) -> list[tuple[str, str]]:
    """(join action, linked scope) for every resource id the body names that a write would join."""
    out: list[tuple[str, str]] = []

    def walk(v: object) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k == "id" and isinstance(x, str):
                    out.extend((action, x) for pattern, action in JOINS if pattern.search(x))
                else:
                    walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
    walk(body)
    return list(dict.fromkeys(out))


def linked_refusal(action: str, segs: list[str], refused: list[tuple[str, str]]) -> str:
    """ARM's words when the caller may write the resource but not join what it names."""
    return (f"The client '{PRINCIPAL}' with object id '{PRINCIPAL}' has permission to perform action '{action}' on "
            f"scope '{scope_of(segs)}'; however, it does not have permission to perform action(s) "
            f"'{', '.join(dict.fromkeys(a for a, _ in refused))}' on the linked scope(s) "
            f"'{', '.join(s for _, s in refused)}' (respectively) or the linked scope(s) are invalid.")


def refusal(action: str, segs: list[str]) -> str:
    """ARM's words for a denied action."""
    return (f"The client '{PRINCIPAL}' with object id '{PRINCIPAL}' does not have authorization to perform action "
            f"'{action}' over scope '{scope_of(segs)}' or the scope is invalid. If access was recently granted, "
            "please refresh your credentials.")
