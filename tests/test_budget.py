"""The per-subscription ARM request budget: a bucket on an injected clock (table), and the SDK pipeline using it."""

from __future__ import annotations

import pytest

from vmssctl.budget import Bucket, Budget, bucket


class FakeTime:
    def __init__(self) -> None:
        self.t = 0.0
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@pytest.mark.parametrize(("rate", "requests", "waited"), [
    (5.0, 5, 0.0),  # a second's worth at once
    (5.0, 6, 0.2),  # the sixth waits for one token
    (5.0, 15, 2.0),  # then one every 0.2 s
    (0.5, 3, 4.0),  # a slow budget: the burst is one request
])
def test_a_budget_paces_requests(rate, requests, waited):
    clock = FakeTime()
    b = Bucket(rate, clock.now, clock.sleep)
    for _ in range(requests):
        b.take()
    assert clock.t == pytest.approx(waited) and b.waited == pytest.approx(waited)


def test_budgets_are_bounded():
    with pytest.raises(ValueError):
        Budget(reads=0)
    with pytest.raises(ValueError):
        Budget(writes=1e6)


@pytest.fixture
def fresh_buckets():
    """The buckets are process-wide: this test's slow budget must not pace the tests after it."""
    from vmssctl import budget

    yield
    budget._buckets.clear()
    budget.share(1)


def test_workers_split_each_budget_between_them(fresh_buckets):
    """Three live workers: each paces at a third of the subscription's budget, buckets made before and after;
    when one dies, the two left take half each."""
    from vmssctl import budget

    before = budget.bucket("sub-a", True, Budget(reads=30, writes=9))
    budget.share(3)
    after = budget.bucket("sub-b", False, Budget(reads=30, writes=9))
    assert (before.rate, after.rate) == (3.0, 10.0)
    budget.share(2)
    assert (before.rate, after.rate) == (4.5, 15.0)
    budget.share(0)  # never more than the budget itself
    assert (before.rate, after.rate) == (9.0, 30.0)


def test_a_budget_is_spent_on_arms_clock(emu, frozen, fresh_buckets):
    """The emulator's throttling counts its simulated seconds: against one running at 1,200 simulated seconds a
    real one, a budget of 20 reads a second is 24,000 a real second (counted in real seconds it slowed a fleet's
    sets 20 times more than Compute would, at 20x); against Azure or a frozen emulator, as given."""
    from vmssctl import budget
    from vmssctl.azure import Connection, _pace

    assert _pace(emu.connection) == 1200.0 and _pace(frozen.connection) == 1.0
    assert _pace(Connection("00000000-0000-0000-0000-000000000001")) == 1.0
    paced = budget.bucket("sub-paced", False, Budget(reads=20, writes=5), _pace(emu.connection))
    assert paced.rate == 24_000.0


def test_a_client_with_a_budget_takes_from_its_subscriptions_bucket(frozen, fresh_buckets):
    from vmssctl.azure import ScaleSetApi, compute_client
    from vmssctl.emulator.server import demo_scale_set

    rg = frozen.group()
    frozen.client().virtual_machine_scale_sets.begin_create_or_update(rg, "web", demo_scale_set(2), polling=False)
    budget = Budget(reads=50, writes=5)
    api = ScaleSetApi(compute_client(frozen.connection, budget=budget), rg, "web")
    reads, writes = bucket(frozen.subscription, False, budget), bucket(frozen.subscription, True, budget)
    taken = {"reads": 0, "writes": 0}
    for name, b in (("reads", reads), ("writes", writes)):
        original = b.take
        b.take = lambda original=original, name=name: (taken.__setitem__(name, taken[name] + 1), original())[1]
    api.get()
    api.get()
    api.instances()
    api.update(None, tags={"paced": "yes"})
    assert taken == {"reads": 3, "writes": 1}



def test_the_network_gateway_of_a_paced_client_spends_the_same_budget(frozen, fresh_buckets):
    """Draining reads and writes load balancers and asks for permissions: ARM counts those requests against the
    subscription's limits too, so a fleet's budget paces them with Compute's."""
    from tests.helpers import set_behind_a_load_balancer
    from vmssctl.azure import ScaleSetApi, compute_client

    rg, _ = set_behind_a_load_balancer(frozen, 2)
    budget = Budget(reads=50, writes=5)
    api = ScaleSetApi(compute_client(frozen.connection, budget=budget), rg, "web")
    model = api.get()
    reads, writes = bucket(frozen.subscription, False, budget), bucket(frozen.subscription, True, budget)
    taken = {"reads": 0, "writes": 0}
    for name, b in (("reads", reads), ("writes", writes)):
        original = b.take
        b.take = lambda original=original, name=name: (taken.__setitem__(name, taken[name] + 1), original())[1]
    network = api.network()
    assert network is not None
    network.refused(model, ("Microsoft.Network/loadBalancers/read",))  # the permissions API: one read
    network.backends(model, health=False)  # the load balancer: one read
    network.set_admin(model, ["0"], "Down")  # the pool read, then written
    assert taken["reads"] >= 3 and taken["writes"] >= 1, taken
    network.set_admin(model, ["0"], "None")
