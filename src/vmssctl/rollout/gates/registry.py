"""Gate providers by kind, and the factory that builds a policy's gates.

A provider is a class registered under its ``kind`` with the settings it takes and a ``from_spec`` that
checks them and builds the gate with what it needs (``Deps``: what only the composition root has, e.g. a
credential for a metrics API). The engine is handed built gates and never sees this factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from vmssctl.errors import UsageError
from vmssctl.rollout.gates.base import Gate


@dataclass(frozen=True)
class Deps:
    """What a gate may be handed when it is built: the connection the rollout runs with (how to reach ARM, and a
    credential for Azure's own APIs). Nothing a gate needs is global."""

    connection: Any = None


class Provider(Protocol):
    kind: ClassVar[str]
    settings: ClassVar[frozenset[str]]  # the settings of its [[gates]] entry, "kind" aside

    @classmethod
    def from_spec(cls, spec: dict, what: str, deps: Deps) -> Gate: ...


PROVIDERS: dict[str, type[Provider]] = {}


P = TypeVar("P", bound=type)


def register(cls: P) -> P:
    """Class decorator: a provider, under its ``kind``."""
    provider: Any = cls  # (a Provider: checked where it is built)
    PROVIDERS[str(provider.kind)] = provider
    return cls


def kinds() -> tuple[str, ...]:
    return tuple(PROVIDERS)


def from_spec(spec: object, n: int = 1, deps: Deps | None = None) -> Gate:
    """A gate from its policy entry (``[[gates]]`` in the TOML, or the flags); every value checked here."""
    what = f"gate {n}"
    if not isinstance(spec, dict):
        raise UsageError(f"{what} must be a table of settings")
    provider = PROVIDERS.get(str(spec.get("kind")))
    if provider is None:
        raise UsageError(f"{what}: kind must be one of {', '.join(kinds())}")
    unknown = set(spec) - provider.settings - {"kind"}
    if unknown:
        raise UsageError(f"{what} ({provider.kind}): unknown setting(s) {', '.join(sorted(unknown))}")
    return provider.from_spec(spec, f"{what} ({provider.kind})", deps or Deps())


def build(specs: tuple[dict, ...], deps: Deps | None = None) -> list[Gate]:
    return [from_spec(s, n, deps) for n, s in enumerate(specs, 1)]


Factory = Callable[[tuple[dict, ...]], list[Gate]]
