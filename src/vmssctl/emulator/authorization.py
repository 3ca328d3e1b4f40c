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


def refusal(action: str, segs: list[str]) -> str:
    """ARM's words for a denied action."""
    return (f"The client '{PRINCIPAL}' with object id '{PRINCIPAL}' does not have authorization to perform action "
            f"'{action}' over scope '{scope_of(segs)}' or the scope is invalid. If access was recently granted, "
            "please refresh your credentials.")
