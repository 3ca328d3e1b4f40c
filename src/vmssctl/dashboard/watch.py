"""One poller per open scale set, however many tabs watch it.

Every browser tab subscribes to the set's watcher; the watcher lists the instances at most
once per interval and fans the result out, so ARM sees the same traffic for one tab or fifty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from vmssctl.errors import VmssctlError
from vmssctl.model import Backend, Instance, ScaleSet

log = logging.getLogger("vmssctl.dashboard")


@dataclass
class View:
    """What was last seen of a scale set."""

    scale_set: ScaleSet | None
    instances: list[Instance]
    at: float
    version: int
    error: str | None = None
    balancing: Balancing | None = None  # the load balancers in front of it (read less often than the instances)


@dataclass(frozen=True)
class Balancing:
    """What the load balancers said of the set's VMs (or why they could not be read)."""

    backends: list[Backend]
    error: str | None = None


@dataclass
class SetWatcher:
    fetch: Callable[[], tuple[ScaleSet, list[Instance], Balancing | None]]
    interval: float
    view: View | None = None
    subscribers: int = 0
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    task: asyncio.Task | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _poke: asyncio.Event = field(default_factory=asyncio.Event)

    async def refresh(self, max_age: float | None = None) -> View:
        """The latest view, fetching only if it is older than ``max_age`` (default: the interval)."""
        max_age = self.interval if max_age is None else max_age
        async with self._lock:
            if self.view is not None and time.monotonic() - self.view.at < max_age:
                return self.view
            version = self.view.version + 1 if self.view else 1
            try:
                ss, instances, balancing = await run_in_threadpool(self.fetch)
                self.view = View(ss, instances, time.monotonic(), version, balancing=balancing)
            except VmssctlError as e:  # ARM unreachable or the set deleted: show it, keep polling
                message = str(e)
                self.view = View(self.view.scale_set if self.view else None,
                                 self.view.instances if self.view else [], time.monotonic(), version, message,
                                 self.view.balancing if self.view else None)
        async with self.changed:
            self.changed.notify_all()
        return self.view

    def poke(self) -> None:
        """Refresh soon (after an operation), still no more than once a second."""
        self._poke.set()

    async def _loop(self) -> None:
        while self.subscribers > 0:
            await self.refresh(max_age=1.0 if self._poke.is_set() else self.interval * 0.95)
            self._poke.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), timeout=self.interval)
            await asyncio.sleep(0)  # let a poke settle before refreshing
        self.task = None

    def subscribe(self) -> None:
        self.subscribers += 1
        if self.task is None:
            self.task = asyncio.create_task(self._loop())

    def unsubscribe(self) -> None:
        self.subscribers = max(0, self.subscribers - 1)

    async def wait_newer(self, version: int, timeout: float) -> View | None:
        async with self.changed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait_for(lambda: self.view is not None and
                                                             self.view.version > version), timeout)
        return self.view


class Watchers:
    def __init__(self, make_fetch: Callable[[str, str, str], Callable], interval: float) -> None:
        self._make_fetch = make_fetch
        self.interval = interval
        self._by_key: dict[tuple[str, str, str], SetWatcher] = {}

    def get(self, sub: str, rg: str, name: str) -> SetWatcher:
        """The watcher of the set ``sub``/``rg``/``name``: a set's identity includes its subscription (the same
        group and name can exist in two)."""
        key = (sub.lower(), rg.lower(), name.lower())
        w = self._by_key.get(key)
        if w is None:
            w = SetWatcher(self._make_fetch(sub, rg, name), self.interval)
            self._by_key[key] = w
        return w
