"""Replay real Azure traffic against the emulator: status codes, LRO headers, body keys and durations.

The pairs in ``tests/replay/*.json`` were derived from the az CLI's own recordings of real Azure
(each file names its source); only what is compared is kept. A difference found here is a fidelity
bug in the emulator, fixed there, not here.
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.helpers import make_set
from vmssctl.emulator import timing

REPLAYS = sorted((Path(__file__).parent / "replay").glob("*.json"))
API = {"api-version": "2021-07-01"}  # as recorded


@pytest.mark.parametrize("replay", REPLAYS, ids=lambda p: p.stem)
def test_recorded_azure_traffic_replays_alike(frozen, replay):
    emu = frozen
    rg = make_set(emu, 2, name="vmss1")
    names = {"sub": emu.subscription, "rg": rg, "vmss": "vmss1"}
    urls: dict[str, str] = {}
    with emu.http() as h:
        for step in json.loads(replay.read_text())["interactions"]:
            req, want = step["request"], step["response"]
            if "advance_until_done" in step:  # the emulator's operation lasts about as long as Azure's did
                started = emu.now()
                while h.get(urls["azure-asyncoperation"]).json()["status"] == "InProgress":
                    emu.admin("POST", "clock", {"advance": 1})
                    assert emu.now() - started < 3 * step["advance_until_done"], step["what"]
                took, recorded = emu.now() - started, step["advance_until_done"]
                assert abs(took - recorded) <= recorded * (timing.JITTER + 0.05), (step["what"], took)
            if "path" in req:
                r = h.request(req["method"], req["path"].format(**names), params=API,
                              headers={"Content-Type": "application/json", "Content-Length": "0"})
            else:
                r = h.get(urls[req["url"]])
            what = step["what"]
            assert r.status_code == want["status"], (what, r.status_code, r.text[:300])
            for header in want.get("headers_present", []):
                assert header in r.headers, (what, header)
                urls[header] = r.headers[header]
            for header in want.get("headers_absent", []):
                assert header not in r.headers, (what, header, r.headers.get(header))
            for part in want.get("location_query", []):
                assert part in urlsplit(r.headers["location"]).query, (what, r.headers["location"])
            if "async_operation_path" in want:
                path = urlsplit(r.headers["azure-asyncoperation"]).path
                assert "/providers/Microsoft.Compute/locations/" in path and "/operations/" in path, (what, path)
            if want.get("body") == "":
                assert r.content == b"", (what, r.content[:200])
            elif isinstance(want.get("body"), dict):
                body = r.json()
                assert set(body) == set(want["body_keys"]), (what, sorted(body))
                assert all(body[k] == v for k, v in want["body"].items()), (what, body)
