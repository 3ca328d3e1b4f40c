"""Running the emulator: TLS certificate, state directory, uvicorn, the demo scale set.

Clients find a running emulator through ``DIR/emulator.json`` (endpoint, CA path,
token); the token is the one secret, so that file is written owner-only.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import json
import logging
import os
import socket
import tempfile
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vmssctl.emulator import DEMO_NEW
from vmssctl.emulator.arm import Emulator, build_app
from vmssctl.emulator.clock import SimClock
from vmssctl.emulator.faults import FaultRule, Faults, Throttle, ThrottleLimits
from vmssctl.emulator.persistence import Saved, SqliteStore, encode
from vmssctl.emulator.world import World

log = logging.getLogger("vmssctl.emulator")

DEMO_RG, DEMO_VMSS, DEMO_LOCATION, DEMO_LB = "demo-rg", "demo-vmss", "eastus", "demo-lb"
DEMO_IMAGE = {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "24.04.202610010"}


def demo_scale_set(capacity: int = 20, image: dict | None = None, zones: list[str] | None = None,
                   mode: str = "Manual", health: bool = True, flexible: bool = False,
                   fault_domains: int | None = None) -> dict:
    """The ARM body of a typical web tier: Uniform, 5 FDs, Application Health extension (``flexible``: Flexible
    orchestration, max spreading unless ``fault_domains`` says 2 or 3)."""
    body: dict = {
        "location": DEMO_LOCATION,
        "sku": {"name": "Standard_D2s_v5", "tier": "Standard", "capacity": capacity},
        "tags": {"app": "web", "env": "demo"},
        "properties": {
            "orchestrationMode": "Flexible" if flexible else "Uniform",
            "platformFaultDomainCount": fault_domains or (1 if zones or flexible else 5),
            "singlePlacementGroup": not flexible,
            "overprovision": False,
            "upgradePolicy": {"mode": mode},
            "virtualMachineProfile": {
                "osProfile": {"computerNamePrefix": "web", "adminUsername": "azureuser",
                              "linuxConfiguration": {"disablePasswordAuthentication": True}},
                "storageProfile": {"imageReference": dict(image or DEMO_IMAGE),
                                   "osDisk": {"createOption": "FromImage", "caching": "ReadWrite",
                                              "managedDisk": {"storageAccountType": "Premium_LRS"}}},
                "networkProfile": {"networkInterfaceConfigurations": [{"name": "nic", "properties": {
                    "primary": True, "ipConfigurations": [{"name": "ip", "properties": {
                        "subnet": {"id": "/subscriptions/x/resourceGroups/demo-rg/providers/Microsoft.Network/"
                                         "virtualNetworks/vnet/subnets/default"}}}]}}]},
            },
        },
    }
    if zones:
        body["zones"] = zones
    if health:
        body["properties"]["virtualMachineProfile"]["extensionProfile"] = {"extensions": [{
            "name": "HealthExtension", "properties": {
                "publisher": "Microsoft.ManagedServices", "type": "ApplicationHealthLinux",
                "typeHandlerVersion": "2.0", "autoUpgradeMinorVersion": True,
                "settings": {"protocol": "http", "port": 80, "requestPath": "/health", "gracePeriod": 60}}}]}
    return body


def demo_load_balancer(subscription: str, rg: str = DEMO_RG, name: str = DEMO_LB) -> dict:
    """A Standard load balancer with one rule (HTTP on 80, probed at /health every 5 s, down after 2 misses)."""
    lid = f"/subscriptions/{subscription}/resourceGroups/{rg}/providers/Microsoft.Network/loadBalancers/{name}"
    return {"location": DEMO_LOCATION, "sku": {"name": "Standard"}, "properties": {
        "frontendIPConfigurations": [{"name": "frontend", "properties": {"privateIPAddress": "10.0.0.100"}}],
        "backendAddressPools": [{"name": "web"}],
        "probes": [{"name": "health", "properties": {"protocol": "Http", "port": 80, "requestPath": "/health",
                                                     "intervalInSeconds": 5, "probeThreshold": 2}}],
        "loadBalancingRules": [{"name": "http", "properties": {
            "protocol": "Tcp", "frontendPort": 80, "backendPort": 80, "idleTimeoutInMinutes": 4,
            "enableTcpReset": True, "frontendIPConfiguration": {"id": f"{lid}/frontendIPConfigurations/frontend"},
            "backendAddressPool": {"id": f"{lid}/backendAddressPools/web"},
            "probe": {"id": f"{lid}/probes/health"}}}]}}


DEMOS = ("uniform", "flexible", "rolling", "fleet")


def seed_demo(world: World, kind: str = "uniform") -> None:
    """What people run, already running (the clock fast-forwarded past its creation), each set behind a load
    balancer of its own: ``uniform``, demo-rg/demo-vmss (20 VMs, 5 UD x 5 FD, Manual) behind demo-lb; ``flexible``,
    demo-rg/demo-flex (12 VMs over 3 zones); ``rolling``, demo-rg/demo-rolling (10 VMs, Rolling policy, 20 %
    batches); ``fleet``, a canary set and three regions' worth of sets over two subscriptions (when the emulator
    serves two) for ``vmssctl fleet``. The demos' catalogue also has the version ``make demo`` moves to."""
    ref = DEMO_IMAGE
    world.catalog.publish(ref["publisher"], ref["offer"], ref["sku"], DEMO_NEW)
    if kind == "fleet":
        subs = world.subscriptions[:2]  # (the first is the default one)
        created = [_behind_lb(world, rg, "web", demo_scale_set(n), subscription=subs[min(k // 3, len(subs) - 1)])
                   for k, (rg, n) in enumerate((("fleet-canary", 2), ("fleet-east-1", 4), ("fleet-east-2", 4),
                                                ("fleet-west-1", 4), ("fleet-west-2", 4)))]
    else:
        name, body = {"uniform": (DEMO_VMSS, demo_scale_set()),
                      "flexible": ("demo-flex", demo_scale_set(12, zones=["1", "2", "3"], flexible=True)),
                      "rolling": ("demo-rolling", _rolling(demo_scale_set(10, mode="Rolling")))}[kind]
        created = [_behind_lb(world, DEMO_RG, name, body, lb=DEMO_LB if kind == "uniform" else f"{name}-lb")]
    if any(created):  # (a restart finds them there: its clock goes on from where it was)
        world.clock.advance(600)
        world.advance()


def _rolling(body: dict) -> dict:
    body["properties"]["upgradePolicy"]["rollingUpgradePolicy"] = {"maxBatchInstancePercent": 20,
                                                                   "pauseTimeBetweenBatches": "PT0S"}
    return body


def _behind_lb(world: World, rg: str, name: str, body: dict, lb: str = "", subscription: str | None = None) -> bool:
    """Create ``rg``/``name`` (once: False when it is there) in the pool of a load balancer of its own (``lb``,
    default ``name``-lb)."""
    if any(s.rg.lower() == rg.lower() and s.name.lower() == name.lower() for s in world.sets.values()):
        return False
    sub = subscription or world.subscription
    world.resource_groups.put(rg, DEMO_LOCATION, subscription=sub)
    lb = lb or f"{name}-lb"
    lb_body = demo_load_balancer(sub, rg, lb)
    world.load_balancers.put(rg, lb, lb_body)
    nic = body["properties"]["virtualMachineProfile"]["networkProfile"]["networkInterfaceConfigurations"][0]
    nic["properties"]["ipConfigurations"][0]["properties"]["loadBalancerBackendAddressPools"] = [
        {"id": lb_body["properties"]["loadBalancingRules"][0]["properties"]["backendAddressPool"]["id"]}]
    world.scale_sets.put(rg, name, body)
    return True


# ------------------------------------------------------------------------ certificate
def ensure_certificate(cert_dir: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1/localhost, reused while valid."""
    ca_path, cert_path, key_path = cert_dir / "ca.pem", cert_dir / "server.pem", cert_dir / "server-key.pem"
    if ca_path.exists() and cert_path.exists() and key_path.exists():
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=7):
            return ca_path, cert_path, key_path
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "vmssctl emulator local CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(now + dt.timedelta(days=825))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=397))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    cert_dir.mkdir(parents=True, exist_ok=True)
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return ca_path, cert_path, key_path


def write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- server
@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    port: int = 0
    state_dir: Path | None = None
    time_scale: float = 60.0
    demo: str | bool = False  # one of DEMOS (True: uniform), or none
    images: str = "strict"  # strict: only published image versions exist (as in Azure); open: any well-formed one
    seed: int = 0
    page_size: int = 100
    throttle: ThrottleLimits | None = None
    faults: list[FaultRule] | None = None
    error_rate: float = 0.0
    throttle_rate: float = 0.0
    latency_ms: float = 0.0
    retry_after: bool = False  # send Retry-After on long-running operations (real Compute sends none)
    subscriptions: int = 1  # how many subscriptions it serves (each with its own throttling buckets)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the emulator on uvloop's event loop where it is installed (not on Windows), else on asyncio's. uvloop's
    sockets and TLS cost the emulator about a sixth less CPU a listed page (bench/emulator.py, six alternating
    pairs: 2.6-3.2 ms against 3.4-3.8)."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    uvloop.run(main)


class _SavingServer(uvicorn.Server):
    """uvicorn re-raises SIGTERM once it has shut down, ending the process: save the state before that."""

    def __init__(self, config: uvicorn.Config, on_shutdown) -> None:
        super().__init__(config)
        self._on_shutdown = on_shutdown

    async def shutdown(self, sockets=None) -> None:
        await super().shutdown(sockets)
        self._on_shutdown()


CHECK_SAVES = os.environ.get("VMSSCTL_EMULATOR_CHECK_SAVES") == "1"
EARLIER_FAILED = "an earlier save failed"  # (a save encoded against what a failed one would have written)


class EmulatorServer:
    """One emulator process's worth of state, served over HTTPS."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.persistent = config.state_dir is not None
        self.state_dir = Path(config.state_dir) if config.state_dir else Path(tempfile.mkdtemp(prefix="vmssctl-emu-"))
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.state_dir / "state.db"
        self.info_file = self.state_dir / "emulator.json"
        faults = Faults(rules=list(config.faults or []), error_rate=config.error_rate,
                        throttle_rate=config.throttle_rate, latency_ms=config.latency_ms)
        world = None
        self.store = SqliteStore(self.state_dir)
        state = self.store.load(World.SCHEMA) if self.persistent else None
        self.saved = Saved(dict(self.store.loaded))  # what the store holds, row by row
        if state is not None:
            if not config.faults and not (config.error_rate or config.throttle_rate or config.latency_ms):
                saved = state.get("faults") or {}
                faults.update(saved)
            world = World.load(state, SimClock(config.time_scale, start=state["now"]), faults)
        extra = [f"00000000-0000-0000-0000-{0xfeed + k:012x}" for k in range(1, config.subscriptions)]
        if world is None:
            world = World(SimClock(config.time_scale), faults, seed=config.seed, subscriptions=extra)
        else:  # a restart may serve more subscriptions than before, never fewer
            world.subscriptions += [x for x in extra if x not in world.subscriptions]
        world.catalog.strict = config.images == "strict"
        if config.demo:
            seed_demo(world, "uniform" if config.demo is True else str(config.demo))
        self._previous: dict = {}
        if self.persistent and self.info_file.exists():
            with contextlib.suppress(ValueError):
                self._previous = json.loads(self.info_file.read_text())
        token = self._previous.get("token")
        kwargs = {"token": token} if token else {}
        self.emu = Emulator(world=world, throttle=Throttle(config.throttle or ThrottleLimits(), world.clock),
                            page_size=config.page_size, seed=config.seed, retry_after=config.retry_after, **kwargs)
        self.ca, self.cert, self.key = ensure_certificate(self.state_dir)
        self.emu.on_write = self.save_async
        self.app = build_app(self.emu)
        self._saved_changes = -1
        self._broken = False  # a commit failed: only a whole save is written until one is
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="emulator-save")  # commits, one after another
        self.saved_at_exit = True
        self.port = 0
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"https://{host}:{self.port}"

    def info(self) -> dict:
        w = self.emu.world
        return {"endpoint": self.endpoint, "ca": str(self.ca), "token": self.emu.token,
                "subscription": w.subscription, "subscriptions": w.subscriptions, "tenant": w.tenant,
                "timeScale": w.clock.scale,
                "stateDir": str(self.state_dir), "pid": os.getpid()}

    def save(self, force: bool = False) -> bool:
        """Save the state through the store when it changed, and wait for it; False if that failed.

        A failed save is loud (logged once per new error, counted in ``/_emulator/stats`` under
        ``persistence``, and the process exits 1); the store keeps a restart from taking an older state for the
        current one.
        """
        job = self._encode(force)
        if job is None:
            return self.emu.persistence.get("ok", True)
        rows, fail, whole, changes = job
        try:
            self._writer.submit(self._commit, rows, fail, whole).result()
        except (OSError, ValueError, TypeError) as e:
            return self._failed(e)
        return self._succeeded(changes)

    async def save_async(self) -> bool:
        """``save`` for a request that must not be answered before its change is on disk: what changed is
        encoded now, on the event loop, and committed by the writer thread while the loop serves other
        requests (whose changes go in the next commit, written after this one)."""
        job = self._encode(False)
        if job is None:
            return self.emu.persistence.get("ok", True)
        rows, fail, whole, changes = job
        try:
            await asyncio.wrap_future(self._writer.submit(self._commit, rows, fail, whole))
        except (OSError, ValueError, TypeError) as e:
            return self._failed(e)
        return self._succeeded(changes)

    def _encode(self, force: bool) -> tuple[dict[str, bytes | None], bool, bool, int] | None:
        """(On the event loop) the rows that changed since the last save, taken as saved already: the next
        save is computed against them while this one is being committed. None when there is nothing to do."""
        if not self.persistent:
            return None
        world = self.emu.world
        changes = world.changes
        if not force and changes == self._saved_changes:
            return None
        record = self.emu.persistence
        whole = not self.saved.rows  # (a first save, or one after a failure)
        try:
            rows = self.saved.changes(world, full=whole)
        except (ValueError, TypeError) as e:
            self._failed(e)
            return None
        self.saved.done(rows)
        self._saved_changes = changes
        if CHECK_SAVES:
            self._check(record)
        return rows, record.get("inject") == "fail", whole, changes

    def _commit(self, rows: dict[str, bytes | None], fail: bool, whole: bool) -> None:
        """(On the writer thread, one commit after another, in order.) After a failed commit, the saves encoded
        against what it would have written are refused too, until a whole one is written."""
        if self._broken and not whole:
            raise OSError(EARLIER_FAILED)
        self.store.fail_next = fail
        try:
            self.store.save(rows)
        except OSError:
            self._broken = True
            raise
        self._broken = False

    def _failed(self, e: Exception) -> bool:
        self.saved = Saved({})  # the store set its rows aside: the next save writes them all
        self._saved_changes = -1
        record = self.emu.persistence
        error = f"{e.__class__.__name__}: {e}"
        if record.get("lastError") != error and str(e) != EARLIER_FAILED:
            log.error("emulator state NOT saved to %s: %s", self.state_file, error)
        if str(e) != EARLIER_FAILED:
            record["lastError"] = error
        record.update(ok=False, failures=record.get("failures", 0) + 1)
        return False

    def _succeeded(self, changes: int) -> bool:
        record = self.emu.persistence
        if not record.get("ok", True):
            log.warning("emulator state saved again to %s", self.state_file)
        record.update(ok=True, lastSaved=self.emu.world.now(), savedChanges=changes)
        return True

    def _check(self, record: dict) -> None:
        """(``VMSSCTL_EMULATOR_CHECK_SAVES=1``, the tests' emulators) What is saved is the whole state: every
        row equal to what a full save would write; a difference is logged and counted, never silent."""
        whole = {k: encode(v) for k, v in self.emu.world.all_parts().items() if k != "clock"}
        held = {k: v for k, v in self.saved.rows.items() if k != "clock"}
        wrong = sorted(k for k in whole.keys() | held.keys() if whole.get(k) != held.get(k))
        if wrong:
            record["mismatches"] = record.get("mismatches", 0) + len(wrong)
            log.error("emulator state saved incompletely: %d row(s) differ from the world, e.g. %s", len(wrong),
                      ", ".join(wrong[:5]))

    def bind(self) -> socket.socket:
        """Listen on the configured port; with port 0 and a state dir, try the previous port first
        so clients configured against a restarted emulator keep working."""
        family = socket.AF_INET6 if ":" in self.config.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
        port: int | None = self.config.port
        if not port and self._previous.get("endpoint"):
            with contextlib.suppress(OSError, ValueError):
                sock.bind((self.config.host, int(self._previous["endpoint"].rsplit(":", 1)[1])))
                port = None
        if port is not None:
            sock.bind((self.config.host, port))
        sock.listen(512)
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        return sock

    async def _ticker(self) -> None:
        """Keeps simulated work moving and on disk even when no client is asking."""
        while True:
            await asyncio.sleep(0.25)
            try:
                self.emu.world.advance()
                await self.emu.written()  # (with the requests' writes, in the same group commit)
            except Exception:  # never let the ticker die silently with the server still up
                log.exception("emulator ticker failed")

    def _final_save(self, exit_on_failure: bool) -> None:
        """The save at shutdown. uvicorn re-raises SIGTERM/SIGINT once it has stopped, which would hide a failed
        save behind the signal's exit status; the emulator command exits 1 instead, saying why."""
        self.saved_at_exit = self.save(force=True)
        if not self.saved_at_exit and exit_on_failure:
            import sys

            print(f"error: the emulator state could not be saved to {self.state_file}: "
                  f"{self.emu.persistence.get('lastError')}", file=sys.stderr, flush=True)
            logging.shutdown()
            os._exit(1)

    async def serve(self, sock: socket.socket, exit_on_failed_save: bool = False) -> None:
        config = uvicorn.Config(self.app, ssl_certfile=str(self.cert), ssl_keyfile=str(self.key),
                                log_level="warning", access_log=False, lifespan="off",
                                timeout_keep_alive=30, server_header=False,
                                timeout_graceful_shutdown=1, http="httptools")
        self._server = _SavingServer(config, lambda: self._final_save(exit_on_failed_save))
        ticker = asyncio.create_task(self._ticker())
        write_private(self.info_file, json.dumps(self.info(), indent=2).encode())
        try:
            await self._server.serve(sockets=[sock])
        finally:
            ticker.cancel()
            self._final_save(exit_on_failed_save)

    def start_in_thread(self) -> EmulatorServer:
        """Serve from a daemon thread: the embedded default for ``make demo`` and commands."""
        sock = self.bind()
        self._thread = threading.Thread(target=lambda: run_loop(self.serve(sock)), daemon=True,
                                        name="vmssctl-emulator")
        self._thread.start()
        deadline = time.monotonic() + 10
        while not (self._server is not None and self._server.started) and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)


def instructions(info: dict) -> str:
    ep, ca, sub = info["endpoint"], info["ca"], info["subscription"]
    state = info["stateDir"]
    return f"""vmssctl emulator listening on {ep}  (subscription {sub})
  state and certificate: {state}  (emulator.json holds the endpoint, CA path and token)

  vmssctl:  vmssctl show -g demo-rg -n demo-vmss --emulator {state}
  SDK:      ComputeManagementClient(credential, "{sub}", base_url="{ep}", connection_verify="{ca}")
            (credential.get_token() returns the token from emulator.json)
  az:       (a profile of its own, so your own az login and cloud are left as they are)
            export AZURE_CONFIG_DIR={state}/az REQUESTS_CA_BUNDLE={ca} \\
                   IDENTITY_ENDPOINT={ep}/metadata/identity/oauth2/token \\
                   IDENTITY_HEADER=$(python3 -c "import json;print(json.load(open('{state}/emulator.json'))['token'])")
            az cloud register -n vmssctl-emulator --endpoint-resource-manager {ep}/ && az cloud set -n vmssctl-emulator
            az login --identity && az vmss list -o table
"""
