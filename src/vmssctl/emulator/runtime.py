"""The running emulator's wiring: the world plus what only the HTTP side needs (tokens, throttling, request
statistics, injected request faults, how an acknowledged write is persisted)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from vmssctl.emulator.authorization import Authorization
from vmssctl.emulator.faults import Faults, RequestDice, Throttle, ThrottleLimits
from vmssctl.emulator.stats import RequestStats
from vmssctl.emulator.world import World


@dataclass
class Emulator:
    """Runtime wiring: the world plus what only the HTTP layer needs."""

    world: World
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    throttle: Throttle = field(default_factory=lambda: Throttle(ThrottleLimits()))
    stats: RequestStats = field(default_factory=RequestStats)
    page_size: int = 100
    seed: int = 0
    retry_after: bool = False  # Retry-After on LROs, scaled to the clock; off by default, as real Compute sends none
    dice: RequestDice = field(init=False)
    persistence: dict = field(default_factory=lambda: {"ok": True, "failures": 0})
    on_write: Callable[[], Awaitable[object]] | None = None  # persist an acknowledged change before answering
    authorization: Authorization = field(default_factory=Authorization)  # actions refused to callers (RBAC)

    def __post_init__(self) -> None:
        self.dice = RequestDice(self.seed)
        self._jwt_key = hashlib.sha256(("jwt:" + self.token).encode()).digest()
        self._commit: asyncio.Future | None = None  # the writes waiting for the next save
        self._saver: asyncio.Future | None = None  # the task saving, while one is

    async def written(self) -> None:
        """Return once what this request changed is saved (``on_write``). Group commit: the writes answered
        while a save is being committed wait together for the next one, so with many writers at once one
        transaction and one fsync serve them all; none is answered before it is on disk."""
        if self.on_write is None:
            return
        commit = self._commit
        if commit is None:
            commit = self._commit = asyncio.get_running_loop().create_future()
            if self._saver is None or self._saver.done():
                self._saver = asyncio.ensure_future(self._save())
        await asyncio.shield(commit)  # (a client that hangs up does not cancel the others' save)

    async def _save(self) -> None:
        while (commit := self._commit) is not None:
            self._commit = None  # (writes from now on wait for the next save)
            try:
                assert self.on_write is not None
                await self.on_write()
            finally:
                commit.set_result(None)

    @property
    def faults(self) -> Faults:
        return self.world.faults

    # A managed-identity token for az: a JWT it can decode (it never verifies), signed so
    # that only tokens this emulator issued are accepted back.
    def mint_jwt(self, resource: str) -> tuple[str, int]:
        now = int(time.time())
        exp = now + 3600
        claims = {"aud": resource, "iss": f"https://sts.windows.net/{self.world.tenant}/", "iat": now,
                  "nbf": now, "exp": exp, "tid": self.world.tenant, "oid": str(uuid.UUID(int=1)),
                  "sub": str(uuid.UUID(int=1)), "appid": str(uuid.UUID(int=2)), "idtyp": "app",
                  "xms_mirid": "/vmssctl-emulator/identity"}

        def enc(obj: dict) -> str:
            return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
        head = enc({"alg": "HS256", "typ": "JWT"}) + "." + enc(claims)
        sig = base64.urlsafe_b64encode(hmac.new(self._jwt_key, head.encode(), "sha256").digest()).rstrip(b"=")
        return head + "." + sig.decode(), exp

    def token_ok(self, token: str) -> bool:
        if hmac.compare_digest(token, self.token):
            return True
        head, _, sig = token.rpartition(".")
        if not head:
            return False
        want = base64.urlsafe_b64encode(hmac.new(self._jwt_key, head.encode(), "sha256").digest()).rstrip(b"=")
        if not hmac.compare_digest(want.decode(), sig):
            return False
        try:
            payload = head.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except ValueError:
            return False
        return bool(claims.get("exp", 0) > time.time())
