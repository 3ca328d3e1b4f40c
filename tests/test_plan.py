"""The planner's tables: how instances are ordered and batched, and which old VMs a surge retires.

Pure functions, worked examples (Kubernetes' rolling.go style); the floor arithmetic has its own
table in ``test_inputs.py`` (``test_floor_table``).
"""

from __future__ import annotations

import pytest

from vmssctl.model import ImageRef, Instance
from vmssctl.plan import make_plan, retire
from vmssctl.policy import load

# ten VMs in 5 fault domains x 5 update domains on Azure's diagonal, zones 1-3 round robin
TEN = [Instance(str(i), i % 5, i % 5, str(i % 3 + 1), "running", "succeeded", "healthy", False, ImageRef(version="1"))
       for i in range(10)]


def sick(*ids: int) -> list[Instance]:
    from dataclasses import replace

    return [replace(i, health="unhealthy") if int(i.instance_id) in ids else i for i in TEN]


@pytest.mark.parametrize("name, flags, instances, batches", [
    ("20 % batches in id order", {}, TEN, [["0", "1"], ["2", "3"], ["4", "5"], ["6", "7"], ["8", "9"]]),
    ("batch size 4, last batch short", {"batch_size": 4}, TEN,
     [["0", "1", "2", "3"], ["4", "5", "6", "7"], ["8", "9"]]),
    ("a canary alone, then 20 % batches", {"canary": 1}, TEN,
     [["0"], ["1", "2"], ["3", "4"], ["5", "6"], ["7", "8"], ["9"]]),
    ("by update domain", {"by": "update-domain"}, TEN, [["0", "5"], ["1", "6"], ["2", "7"], ["3", "8"], ["4", "9"]]),
    ("by zone, groups over the budget split", {"by": "zone", "max_unavailable": "2"}, TEN,
     [["0", "3"], ["6", "9"], ["1", "4"], ["7"], ["2", "5"], ["8"]]),
    ("by fault domain, unhealthy first", {"by": "fault-domain", "prioritize_unhealthy": True}, sick(7, 3),
     [["7", "3"], ["0", "5"], ["1", "6"], ["2"], ["8"], ["4", "9"]]),
    ("by batch, unhealthy first", {"batch_size": 3, "prioritize_unhealthy": True}, sick(8),
     [["8", "0", "1"], ["2", "3", "4"], ["5", "6", "7"], ["9"]]),
    ("named instances only, in id order", {"instances": ("9", "2", "5"), "batch_size": 2}, TEN, [["2", "5"], ["9"]]),
])
def test_batches(name, flags, instances, batches):
    plan = make_plan(instances, load(None, flags), lambda i: True)
    assert plan.batches == batches, name
    assert plan.pending == sum(len(b) for b in batches)


def test_instances_already_done_are_skipped_not_batched():
    plan = make_plan(TEN, load(None, {"batch_size": 5}), lambda i: int(i.instance_id) % 2 == 0)
    assert plan.batches == [["0", "2", "4", "6", "8"]] and plan.skipped == ["1", "3", "5", "7", "9"]


@pytest.mark.parametrize("name, candidates, count, expect", [
    ("the most loaded zone, fault domain and update domain first, highest id first",
     [str(i) for i in range(10)], 2, ["9", "8"]),
    ("only candidates are ever retired", ["0", "1", "2"], 5, ["0", "2", "1"]),
    ("nothing asked, nothing retired", ["0", "1"], 0, []),
])
def test_retire_keeps_domains_balanced(name, candidates, count, expect):
    assert retire(TEN, candidates, count) == expect, name
