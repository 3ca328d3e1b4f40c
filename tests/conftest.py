"""Fixtures: a real emulator process over HTTPS, and SDK clients pointed at it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from vmssctl.azure import Connection, compute_client
from vmssctl.emulator.server import demo_scale_set

# A command that finds a database unreachable says so at once in tests (in use it waits 30 s for it to come back);
# the outage tests give their commands a wait of their own.
os.environ.setdefault("VMSSCTL_DB_WAIT", "0")


@dataclass
class Emu:
    """A running emulator process and the ways tests talk to it."""

    proc: subprocess.Popen
    state_dir: Path
    info: dict

    @property
    def endpoint(self) -> str:
        return self.info["endpoint"]

    @property
    def subscription(self) -> str:
        return self.info["subscription"]

    @property
    def connection(self) -> Connection:
        return Connection(self.subscription, self.endpoint, self.info["ca"], self.info["token"])

    def client(self, **kwargs):
        kwargs.setdefault("polling_interval", 0.2)  # a 1,200x emulator ends an LRO in a fraction of a second
        return compute_client(self.connection, **kwargs)

    def http(self, token: str | None = "default") -> httpx.Client:
        bearer = self.info["token"] if token == "default" else token
        headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}"}
        tls = ssl.create_default_context(cafile=self.info["ca"])
        return httpx.Client(base_url=self.endpoint, verify=tls, headers=headers, timeout=30)

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        with self.http() as h:
            r = h.request(method, f"/_emulator/{path}", json=body)
            r.raise_for_status()
            return r.json()

    @contextlib.contextmanager
    def fault(self, effect: str, **match: str) -> Iterator[None]:
        """Add one fault rule for the duration of a ``with`` block."""
        rules = self.admin("GET", "faults")["rules"]
        self.admin("PUT", "faults", {"rules": [*rules, {"match": match, "effect": effect}]})
        try:
            yield
        finally:
            self.admin("PUT", "faults", {"rules": rules})

    def stats(self, since: float | None = None, records: bool = False) -> dict:
        q = [f"since={since}"] if since is not None else []
        if records:
            q.append("records=true")
        return self.admin("GET", "stats" + ("?" + "&".join(q) if q else ""))

    def now(self) -> float:
        return self.admin("GET", "clock")["now"]

    def group(self, name: str | None = None) -> str:
        name = name or f"rg-{uuid.uuid4().hex[:8]}"
        with self.http() as h:
            for _ in range(20):  # an emulator with injected faults may refuse a few times
                r = h.put(f"/subscriptions/{self.subscription}/resourcegroups/{name}",
                          params={"api-version": "2022-09-01"}, json={"location": "eastus"})
                if r.status_code not in (429, 500, 503):
                    break
            r.raise_for_status()
        return name

    def clients(self) -> list:
        """An SDK client per subscription the emulator serves, in emulator.json's order."""
        from dataclasses import replace

        return [compute_client(replace(self.connection, subscription=sub)) for sub in self.info["subscriptions"]]

    def create_sets(self, sets: dict[tuple[int, str], list[str]], capacity: int, writers: int = 1) -> None:
        """Scale sets in several subscriptions (``{(subscription index, group): [names]}``), created without waiting
        on each (``writers`` groups at a time: a bench's many, the tests' one, in order); then the clock moves on
        until every one of them runs.

        Sent with ``http.client``, a connection per writer and the body encoded once: httpx spent about 1.3 ms of
        CPU a request here (its URL checks), as much as the emulator's own work on a 2-core machine, and a bench
        that times the creates would time its own client."""
        import http.client
        import threading
        from concurrent.futures import ThreadPoolExecutor

        subs = self.info["subscriptions"]
        body = json.dumps(demo_scale_set(capacity)).encode()
        host, port = self.endpoint.removeprefix("https://").rsplit(":", 1)
        tls = ssl.create_default_context(cafile=self.info["ca"])
        headers = {"Authorization": f"Bearer {self.info['token']}", "Content-Type": "application/json"}
        local = threading.local()
        opened: list[http.client.HTTPSConnection] = []

        def put(path: str, data: bytes) -> None:
            if not hasattr(local, "conn"):
                local.conn = http.client.HTTPSConnection(host, int(port), context=tls, timeout=30)
                opened.append(local.conn)
            local.conn.request("PUT", path, data, headers)
            r = local.conn.getresponse()
            answer = r.read()
            if r.status >= 400:
                raise RuntimeError(f"PUT {path}: {r.status} {answer[:300]!r}")

        def group(item: tuple[tuple[int, str], list[str]]) -> None:
            (sub, rg), names = item
            base = f"/subscriptions/{subs[sub]}/resourcegroups/{rg}"
            put(f"{base}?api-version=2022-09-01", b'{"location": "eastus"}')
            for name in names:
                put(f"{base}/providers/Microsoft.Compute/virtualMachineScaleSets/{name}?api-version=2024-11-01",
                    body)
        try:
            if writers == 1:
                for item in sets.items():
                    group(item)
            else:
                with ThreadPoolExecutor(writers) as pool:
                    list(pool.map(group, sets.items()))
        finally:
            for conn in opened:
                conn.close()
        self.admin("POST", "clock", {"advance": 900})

    def create_set(self, rg: str, name: str = "web", capacity: int = 10, **kwargs) -> object:
        body = demo_scale_set(capacity, **kwargs)
        return self.client().virtual_machine_scale_sets.begin_create_or_update(rg, name, body).result()

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(httpx.HTTPError, ValueError):  # (an emulator a test broke says nothing)
                wrong = self.admin("GET", "stats")["persistence"].get("mismatches")
                assert not wrong, f"the emulator saved {wrong} row(s) unlike its state: see {self.state_dir}"
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def pytest_configure(config) -> None:
    """The tests' emulators check every save against the whole state (persistence.Saved writes only what changed;
    a part it missed fails the test that caused it). Benches, which import these helpers, do not pay for it."""
    os.environ.setdefault("VMSSCTL_EMULATOR_CHECK_SAVES", "1")


def start_emulator(state_dir: Path, *args: str) -> Emu:
    state_dir.mkdir(parents=True, exist_ok=True)
    info_file = state_dir / "emulator.json"
    log = open(state_dir / "emulator.log", "ab")  # noqa: SIM115 - lives as long as the process
    if "--images" not in args:  # (tests name any version they like; the strict catalogue has its own tests)
        args = ("--images", "open", *args)
    proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "emulator", "--state-dir", str(state_dir), *args],
                            stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"emulator exited: {(state_dir / 'emulator.log').read_text()[-2000:]}")
        try:
            info = json.loads(info_file.read_text())
            if info.get("pid") == proc.pid:
                with httpx.Client(verify=ssl.create_default_context(cafile=info["ca"])) as h:
                    h.get(info["endpoint"] + "/metadata/endpoints").raise_for_status()
                return Emu(proc, state_dir, info)
        except (FileNotFoundError, ValueError, httpx.HTTPError):
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("emulator did not start within 30 s")


@pytest.fixture(scope="session")
def emu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emu]:
    """One shared emulator: fast clock, no throttling, small pages so paging is exercised."""
    e = start_emulator(tmp_path_factory.mktemp("emu"), "--time-scale", "1200", "--throttle", "off",
                       "--page-size", "10", "--demo")
    yield e
    e.stop()


@pytest.fixture(scope="session")
def frozen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emu]:
    """An emulator whose clock only moves when a test advances it: for asserting in-between states."""
    e = start_emulator(tmp_path_factory.mktemp("frozen"), "--time-scale", "0", "--throttle", "off")
    yield e
    e.stop()


@pytest.fixture
def rg(emu: Emu) -> str:
    return emu.group()


def cli(capsys, *args: str) -> tuple[int, list[dict], str]:
    """Run vmssctl in-process; returns (exit code, JSON lines on stdout, stderr)."""
    from vmssctl.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return code, lines, err


@pytest.fixture
def up(frozen, tmp_path, capsys):
    """``up(rg, *flags)`` runs an upgrade of RG/web against the frozen emulator with -o json --yes."""
    def run(rg: str, *flags: str, name: str = "web") -> tuple[int, list[dict], str]:
        return cli(capsys, "upgrade", "-g", rg, "-n", name, "--emulator", str(frozen.state_dir), "--journal",
                   str(tmp_path / "journal.sqlite"), "-o", "json", "--yes", *flags)
    return run


class PostgresMissing(Exception):
    pass


@dataclass
class Postgres:
    """A throwaway PostgreSQL cluster: its URL, and stop/start as an operator (or a failover) would."""

    url: str
    pg_ctl: str
    data: Path
    port: int
    run_as: list[str]

    def ctl(self, *args: str) -> None:
        subprocess.run([*self.run_as, self.pg_ctl, "-D", str(self.data), "-l", str(self.data / "log"), "-w", "-o",
                        f"-p {self.port} -k {self.data} -h 127.0.0.1", *args], check=True, capture_output=True)

    def stop(self) -> None:
        """As abruptly as a crash: every connection is cut (``-m immediate``)."""
        self.ctl("-m", "immediate", "stop")

    def start(self) -> None:
        self.ctl("start")


@contextlib.contextmanager
def throwaway_postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster from Debian's package for one test or bench: initdb in a temp dir (as the postgres
    user when run as root: initdb refuses root), pg_ctl on 127.0.0.1 and a free port, trust auth; stopped and
    removed afterwards."""
    import glob
    import shutil
    import socket
    import tempfile

    def tool(name: str) -> str | None:
        found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
        return found[-1] if found else shutil.which(name)

    initdb, pg_ctl = tool("initdb"), tool("pg_ctl")
    if not initdb or not pg_ctl:
        raise PostgresMissing("PostgreSQL is not installed (make postgresql)")
    base = Path(tempfile.mkdtemp(prefix="vmssctl-pg-"))  # not under pytest's 0700 directory: postgres reads it
    base.chmod(0o755)
    data = base / "pgdata"
    data.mkdir()
    run_as: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(data, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pg = Postgres(f"postgresql://postgres@127.0.0.1:{port}/postgres", pg_ctl, data, port, run_as)
    try:
        subprocess.run([*run_as, initdb, "-D", str(data), "-A", "trust", "-U", "postgres"], check=True,
                       capture_output=True)
        pg.start()
        yield pg
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[str]:
    """One throwaway PostgreSQL cluster for the session (started by the first test that needs it)."""
    try:
        with throwaway_postgres() as pg:
            yield pg.url
    except PostgresMissing as e:
        if os.environ.get("CI"):
            pytest.fail(str(e))
        pytest.skip(str(e))


@pytest.fixture
def postgres(postgres_cluster: str) -> str:
    """A fresh database of its own in the session's PostgreSQL cluster: its URL."""
    import uuid

    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_cluster, autocommit=True) as db:
        db.execute(f"CREATE DATABASE {name}")  # (a name made above)
    return postgres_cluster.rsplit("/", 1)[0] + f"/{name}"


@dataclass
class Worker:
    """A `vmssctl worker` process, as if on a machine of its own (own HOME, no file in common with the others), its
    output in a file (a pipe read line by line can strand lines in a buffer)."""

    proc: subprocess.Popen
    log: Path
    name: str

    def said(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, needle: str, seconds: float = 60, times: int = 1) -> None:
        """Until the worker has said ``needle`` (``times`` times in all; it is a process: its output comes in real
        time)."""
        deadline = time.monotonic() + seconds
        while self.said().count(needle) < times:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {self.name} did not say {needle!r}: {self.said()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_workers(database: str, where: Path, n: int, *flags: str) -> list[Worker]:
    """``n`` workers on ``database`` (ids w0, w1, ...), each up (DBOS launched) before this returns."""
    out = []
    for k in range(n):
        home = where / f"machine-{k}"
        home.mkdir(parents=True, exist_ok=True)
        log = home / "worker.log"
        proc = subprocess.Popen([sys.executable, "-m", "vmssctl", "worker", "--database", database, "--executor-id",
                                 f"w{k}", "--heartbeat", "1s", "--takeover-after", "6s", *flags],
                                stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=home,
                                env={**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data")})
        out.append(Worker(proc, log, f"w{k}"))
    for w in out:  # each says so once its DBOS is up (the first one creates DBOS's tables)
        w.wait_for("taking fleets")
    return out


def fleet_emulator(state_dir: Path) -> Emu:
    """An emulator for fleets: two subscriptions, no throttling, and a clock at 2,400 simulated seconds a real one
    (a stage's sets roll out in parallel, each set's engine waiting on the clock in its own thread)."""
    return start_emulator(state_dir, "--time-scale", "2400", "--throttle", "off", "--subscriptions", "2")


class Background:
    """A vmssctl command in a process of its own (`fleet run`, say), its JSON lines read as they come."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "vmssctl", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
        self.events: list[dict] = []

    def until(self, kind: str, **match: object) -> dict:
        """Read events until one of type ``kind`` (with these fields) comes; it is returned."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            event = json.loads(line)
            self.events.append(event)
            if event.get("type") == kind and all(event.get(k) == v for k, v in match.items()):
                return event
        last = [{k: v for k, v in e.items() if k not in ("view",)} for e in self.events[-6:]]
        raise AssertionError(f"no {kind} {match}: exit {self.proc.wait()}, last events {last}, "
                             f"{self.proc.stderr.read()[-2000:] if self.proc.stderr else ''}")

    def finish(self, timeout: float = 180) -> int:
        assert self.proc.stdout is not None
        self.events += [json.loads(line) for line in self.proc.stdout]
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
