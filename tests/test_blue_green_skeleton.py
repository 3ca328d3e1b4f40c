"""The blue/green skeleton proves the strategy seam: a strategy file and three gateway methods, no engine change.

In process (the emulator's world through ``WorldGateway``, the engine on the world's clock): green is created
beside blue on the new image, blue goes to zero once green is healthy; a green that fails is deleted and blue
never stopped serving; a crash after the green set was recorded resumes without a second one. Over HTTPS with
the SDK: the gateway's clone, for_set and delete_set on the wire.
"""

from __future__ import annotations

import pytest

import vmssctl.rollout.strategies.blue_green  # noqa: F401  (registers the strategy)
from tests.helpers import CONN, NEW, Crash, Events, Tripwire, make_policy, make_set
from vmssctl import upgrade
from vmssctl.emulator.faults import FaultRule
from vmssctl.emulator.inprocess import WorldClock, WorldGateway, create_set, frozen_world
from vmssctl.emulator.resources import availability
from vmssctl.errors import NotFound, PreconditionFailed
from vmssctl.model import ImageRef
from vmssctl.rollout.engine import EXIT_FAILED, EXIT_OK
from vmssctl.rollout.journal import Journal
from vmssctl.rollout.strategies.blue_green import green_name
from vmssctl.target import ImageChange

GREEN = green_name("web", ImageRef(publisher="p", offer="o", sku="s", version=NEW))


def rollout(world, journal, gateway=None) -> tuple[int, Events]:
    api = gateway or WorldGateway(world, "rg", "web")
    sink = Events()
    prepared = upgrade.prepare(api, journal, CONN, ImageChange(version=NEW), make_policy(strategy="blue-green"))
    return upgrade.start(api, journal, CONN, prepared, [sink], WorldClock(world)), sink


@pytest.fixture
def world():
    w = frozen_world()
    create_set(w, "rg", capacity=6)
    assert w.scale_sets.get("rg", "web").healthy == 6
    return w


def healthy_between(ss, start: float, end: float) -> int:
    """The fewest healthy VMs the set's record shows from ``start`` (all 6 then: the fixture) to just before
    ``end`` (the record keeps times to the millisecond)."""
    return min((r["healthy"] for r in availability.since(ss, start)["records"] if start <= r["time"] < end - 0.001),
               default=6)


def test_green_takes_over_and_blue_goes_to_zero_without_a_dip(world, tmp_path):
    since = world.now()
    code, sink = rollout(world, Journal(tmp_path / "j.db"))
    assert code == EXIT_OK, sink.events[-3:]
    blue, green = world.scale_sets.get("rg", "web"), world.scale_sets.get("rg", GREEN)
    assert blue.capacity == 0 and not blue.instances
    assert green.capacity == 6 and all(availability.healthy(green, i) for i in green.instances.values())
    assert green.vm_profile["storageProfile"]["imageReference"]["version"] == NEW
    assert green.model["tags"]["vmssctl-rollout"] == sink.events[0]["rollout"]
    # blue kept serving until green was healthy: it was never below its capacity before it was scaled down
    down = next(e["time"] for e in sink.of("blue_scaled_down"))
    assert healthy_between(blue, since, down) == 6
    assert [e["type"] for e in sink.events if e["type"].startswith(("green", "blue"))] == \
        ["green_creating", "blue_scaled_down"]


def test_a_green_that_fails_is_deleted_and_blue_never_stopped(world, tmp_path):
    world.faults.rules.append(FaultRule(match={"version": NEW}, effect="fail", code="OSProvisioningTimedOut"))
    since = world.now()
    code, sink = rollout(world, Journal(tmp_path / "j.db"))
    assert code == EXIT_FAILED
    assert sink.of("green_deleted") and "failed to provision" in sink.of("green_deleted")[0]["reason"]
    world.advance(world.now() + 3600)
    assert (GREEN.lower() in {n for _, n in world.sets}) is False
    blue = world.scale_sets.get("rg", "web")
    assert healthy_between(blue, since, world.now()) == 6 and blue.capacity == 6


def test_a_crash_after_green_was_recorded_resumes_without_a_second_green(world, tmp_path):
    journal = Journal(tmp_path / "j.db")
    dead = [False]
    with pytest.raises(Crash):
        rollout(world, Tripwire(journal, "-", 0, dead), Tripwire(WorldGateway(world, "rg", "web"), "clone", 1, dead))
    assert GREEN.lower() not in {n for _, n in world.sets}  # the crash came before the create reached ARM
    code, sink = rollout(world, journal)
    assert code == EXIT_OK
    assert [n for _, n in world.sets] == ["web", GREEN.lower()]
    assert not sink.of("green_creating")  # the recorded name was taken up, not a new one


def test_the_sdk_gateway_clones_a_set_once_and_deletes_it(emu):
    from vmssctl.azure import ScaleSetApi

    rg = make_set(emu, capacity=2)
    blue = ScaleSetApi(emu.client(), rg, "web")
    image = ImageRef(publisher="Canonical", offer="ubuntu-24_04-lts", sku="server", version=NEW)
    blue.clone("web-green", image, 3, {"vmssctl-rollout": "r-1"})
    with pytest.raises(PreconditionFailed):  # If-None-Match: a second clone overwrites nothing
        blue.clone("web-green", image, 5, {})
    green = blue.for_set("web-green")
    model = green.get()
    assert (model.capacity, model.image.version, model.tags.get("vmssctl-rollout")) == (3, NEW, "r-1")
    assert model.upgrade_mode == blue.get().upgrade_mode and model.vm_size == blue.get().vm_size
    emu.admin("POST", "clock", {"advance": 900})
    assert len(green.instances()) == 3 and all(i.healthy for i in green.instances())
    green.delete_set()
    emu.admin("POST", "clock", {"advance": 900})
    with pytest.raises(NotFound):
        green.get()
    assert blue.get().capacity == 2

