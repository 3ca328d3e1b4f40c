"""Command line: parse, call, render. No business logic lives here.

Flags follow ``az`` (``-g``, ``-n``, ``--subscription``, ``-o json|table``). User errors
end in one line on stderr and exit code 2; ARM failures in one line and exit code 1.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from vmssctl import __version__, emulator, inputs
from vmssctl.errors import NotConfirmed, UsageError
from vmssctl.fleet import DEFAULT_MAX_SETS, HIGHEST_MAX_SETS

if TYPE_CHECKING:  # (the Azure SDK is imported when a command needs ARM, not to parse arguments)
    from vmssctl.azure import Connection, ScaleSetApi

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2, like every other user error
        raise UsageError(f"{self.prog}: {message}")


def _connection_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("connection")
    g.add_argument("--emulator", metavar="DIR", type=_bounded(inputs.path, "--emulator"),
                   help="use the emulator whose emulator.json is in DIR")
    g.add_argument("--endpoint", type=_bounded(inputs.text, "--endpoint", 512),
                   help="ARM endpoint (https); default real Azure (or $VMSSCTL_ENDPOINT)")
    g.add_argument("--ca", type=_bounded(inputs.path, "--ca"), help="CA bundle for --endpoint (or $VMSSCTL_CA)")
    g.add_argument("--subscription", type=_bounded(inputs.subscription, "--subscription"),
                   help="subscription id (default $AZURE_SUBSCRIPTION_ID)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")


def _bounded(parse: Callable, flag: str, *bounds: float) -> Callable[[str], object]:
    """An argparse ``type`` that parses and bounds with ``vmssctl.inputs`` (UsageError: one line, exit 2)."""
    return lambda text: parse(text, flag, *bounds)


def _target_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("-g", "--resource-group", required=True, type=_bounded(inputs.resource_group, "-g"),
                   help="resource group of the scale set")
    p.add_argument("-n", "--name", required=True, type=_bounded(inputs.scale_set_name, "-n"),
                   help="scale set name")


def _emulator_args(emu: argparse.ArgumentParser) -> None:
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=_bounded(inputs.count, "--port", 0, 65535), default=0,
                     help="0 = any free port (see emulator.json)")
    emu.add_argument("--state-dir", type=_bounded(inputs.path, "--state-dir"),
                     help="keep state, certificate and emulator.json here")
    emu.add_argument("--time-scale", type=_bounded(inputs.number, "--time-scale", 0, 100_000), default=60.0,
                     help="simulated seconds per real second (default 60; 0 = frozen)")
    emu.add_argument("--demo", nargs="?", const="uniform", choices=("uniform", "flexible", "rolling", "fleet"),
                     help="create scale sets to try: uniform (default: demo-rg/demo-vmss, 20 VMs, 5 UD x 5 FD), "
                          "flexible (demo-rg/demo-flex, 12 VMs over 3 zones), rolling (demo-rg/demo-rolling, a "
                          "Rolling policy), fleet (fleet-* groups over two subscriptions with --subscriptions 2); "
                          "each behind a load balancer of its own")
    emu.add_argument("--images", choices=("strict", "open"), default="strict",
                     help="strict (default, as Azure): a model naming an image version that is not published in "
                          "the set's region (or a gallery version not replicated there) is refused; open: any "
                          "well-formed version is taken as published everywhere")
    emu.add_argument("--seed", type=_bounded(inputs.count, "--seed", 0, 2**63 - 1), default=0,
                     help="seed for simulated jitter and random faults")
    emu.add_argument("--page-size", type=_bounded(inputs.count, "--page-size", 1, 1000), default=100,
                     help="items per page of list calls (1-1000)")
    emu.add_argument("--throttle", default="reads=250/25,writes=200/10",
                     help="ARM token buckets 'reads=CAP/PER_S,writes=CAP/PER_S' or 'off'")
    emu.add_argument("--fault", action="append", default=[], metavar="MATCH:EFFECT",
                     help="e.g. version=2.0.1:unhealthy, instanceId=3:fail, sku=x:slow=4 (repeatable)")
    emu.add_argument("--error-rate", type=_bounded(inputs.number, "--error-rate", 0, 1), default=0.0,
                     help="share of requests answered 500/503 (0-1)")
    emu.add_argument("--throttle-rate", type=_bounded(inputs.number, "--throttle-rate", 0, 1), default=0.0,
                     help="share of requests answered 429 (0-1)")
    emu.add_argument("--latency-ms", type=_bounded(inputs.number, "--latency-ms", 0, 60_000), default=0.0,
                     help="added latency per request (at most 60000)")
    emu.add_argument("--subscriptions", type=_bounded(inputs.count, "--subscriptions", 1, 10), default=1,
                     help="how many subscriptions to serve (1-10, listed in emulator.json), each throttled apart")
    emu.add_argument("--retry-after", action="store_true",
                     help="send Retry-After on long-running operations, scaled to the clock (real Compute sends "
                          "none: clients poll at their own interval)")
    emu.set_defaults(func=cmd_emulator)


def _show_args(show: argparse.ArgumentParser) -> None:
    _target_flags(show)
    _connection_flags(show)
    show.set_defaults(func=cmd_show)


def _instances_args(inst: argparse.ArgumentParser) -> None:
    _target_flags(inst)
    _connection_flags(inst)
    inst.set_defaults(func=cmd_instances)


def _doctor_args(doc: argparse.ArgumentParser) -> None:
    _target_flags(doc)
    doc.add_argument("--version", help="check that this platform image version is published in the set's region")
    doc.add_argument("--sku", help="with --version: another SKU of the same offer")
    doc.add_argument("--strategy", choices=("in-place", "surge", "blue-green"), default="in-place",
                     help="check the permissions this strategy needs (default in-place)")
    _connection_flags(doc)
    doc.set_defaults(func=cmd_doctor)


def _upgrade_args(up: argparse.ArgumentParser) -> None:
    _target_flags(up)
    img = up.add_argument_group("target image (omit all to finish instances still behind the model)")
    img.add_argument("--version", help="platform image version, Major.Minor.Build or 'latest'")
    img.add_argument("--sku", help="platform image SKU")
    img.add_argument("--offer", help="platform image offer")
    img.add_argument("--publisher", help="platform image publisher")
    img.add_argument("--image-id", help="gallery image (version) or managed image resource id")
    img.add_argument("--custom-uri", help="legacy unmanaged image: URL of a .vhd blob")
    pol = up.add_argument_group("rollout policy (also from --policy FILE.toml; flags win)")
    pol.add_argument("--policy", metavar="FILE", type=_bounded(inputs.path, "--policy"),
                     help="TOML file with the settings below (underscored names)")
    pol.add_argument("--by", choices=("update-domain", "fault-domain", "zone", "batch"),
                     help="group batches by update domain, fault domain, zone, or plain batches (default batch)")
    pol.add_argument("--strategy", choices=("in-place", "surge", "blue-green"),
                     help="in-place (default): upgrade batches where they stand, down to the healthy floor; surge: "
                          "add new VMs on the new image, then delete as many old ones (capacity never below 100%%); "
                          "blue-green: a new set on the new image beside this one, in the same load balancer pools, "
                          "then this one drained, kept for --bake (a rollback readmits it), and scaled to 0")
    pol.add_argument("--wait-for-image", metavar="DUR",
                     help="when the gallery image version is still replicating to the set's region, wait up to "
                          "this long before changing anything (default: refuse, exit 2)")
    pol.add_argument("--green-capacity", metavar="N", help="blue-green: the new set's capacity (default: this set's)")
    pol.add_argument("--bake", metavar="DUR",
                     help="blue-green: how long the old set stays drained but ready after the switch (default 10m)")
    pol.add_argument("--green-weight", metavar="N|P%",
                     help="blue-green: admit only this many green VMs (by admin state) for --pause, judged by the "
                          "gates, before all of them take traffic")
    pol.add_argument("--delete-blue", action="store_true", default=None,
                     help="blue-green: delete the old set after --bake (default: scale it to 0, model kept)")
    pol.add_argument("--max-surge", metavar="N|P%", help="surge: VMs added at a time (default: the batch size)")
    pol.add_argument("--surge-fallback", choices=("none", "in-place"),
                     help="when ARM refuses the scale-out (quota, SKU, allocation): stop (none, default) or go on "
                          "in-place")
    pol.add_argument("--drain", choices=("auto", "none", "lb", "appgw", "hook"),
                     help="lb: before VMs are upgraded (in place) or deleted (surge), set their admin state Down in "
                          "the load balancers in front of the set (no new connections), wait --drain-timeout; "
                          "upgraded and new VMs count only once the load balancers see them Up. appgw: out of the "
                          "Application Gateways' pools instead (Uniform sets; connection draining). hook: --drain-hook "
                          "does it. auto (default): lb when the set is behind a load-balancing rule with a probe")
    pol.add_argument("--drain-hook", metavar="CMD",
                     help="with --drain hook: a command run before VMs are disrupted (VMSSCTL_DRAIN=drain) and "
                          "after they are good again (=readmit), with VMSSCTL_INSTANCES, VMSSCTL_RESOURCE_GROUP, "
                          "VMSSCTL_NAME; exit 0 is done. It must be idempotent (a resumed rollout may run it again)")
    pol.add_argument("--drain-timeout", metavar="DUR",
                     help="how long drained VMs keep their established connections (default 30s, at most 1h)")
    pol.add_argument("--batch-size", metavar="N", help="instances per batch with --by batch (1-1000)")
    pol.add_argument("--batch-percent", metavar="P", help="instances per batch as a %% of the set, with --by batch")
    pol.add_argument("--instances", help="only these instance ids, e.g. 3,7,9")
    pol.add_argument("--canary", metavar="N", help="upgrade this many first, alone")
    pol.add_argument("--pause", help="soak time after each batch, e.g. 2m")
    pol.add_argument("--max-unavailable", help="instances (or %%) allowed down at once, unhealthy ones included")
    pol.add_argument("--max-unhealthy-upgraded", help="upgraded instances (or %%) allowed to be unhealthy (default 0)")
    pol.add_argument("--health-timeout", help="how long a batch may take to be healthy (default 10m)")
    pol.add_argument("--rollback", choices=("auto", "manual"), help="auto: restore the previous image on failure")
    pol.add_argument("--prioritize-unhealthy", action="store_true", default=None,
                     help="upgrade instances that are already unhealthy first")
    pol.add_argument("--window", dest="windows", action="append", metavar="'DAYS HH:MM-HH:MM'",
                     help="maintenance window (UTC) in which batches may start, e.g. 'Mon-Fri 22:00-06:00' "
                          "(repeatable; default: any time)")
    pol.add_argument("--allow-automatic", action="store_true", default=None,
                     help="on a set whose upgrade policy is Automatic: let Azure upgrade every instance at once "
                          "(an outage), watched and gated by vmssctl")
    pol.add_argument("--no-health-signal", action="store_true", default=None,
                     help="go on although the set has no health signal (no Application Health extension, "
                          "probe, hook or gate): only power and provisioning state will be checked")
    pol.add_argument("--probe-url", help="extra gate: http(s) URL template, e.g. http://10.0.0.{instance_id}/health")
    pol.add_argument("--hook", help="extra gate: shell command template, exit 0 = pass")
    pol.add_argument("--poll", help="poll interval while a batch settles (default 10s)")
    gate = up.add_argument_group("metric gates (more, and every setting, as [[gates]] in --policy)")
    gate.add_argument("--prometheus", metavar="URL", help="Prometheus server for a query gate, e.g. http://prom:9090")
    gate.add_argument("--prometheus-query", metavar="PROMQL",
                      help="one value per instance ({instance_id} etc.) or per batch, e.g. "
                           "'sum(rate(errors{vm=\"{instance_id}\"}[1m]))'")
    gate.add_argument("--prometheus-success", metavar="COND", help="e.g. 'result < 0.05' (required with a query)")
    gate.add_argument("--prometheus-failure", metavar="COND", help="fails at once when true, e.g. 'result > 0.2'")
    gate.add_argument("--prometheus-count", metavar="N", help="successful measurements needed (default 1)")
    gate.add_argument("--prometheus-interval", metavar="DUR", help="between measurements (default 30s)")
    gate.add_argument("--web-url", metavar="URL", help="a JSON document to check, e.g. http://10.0.0.{instance_id}/status")
    gate.add_argument("--web-jsonpath", metavar="PATH", help="the value to test, e.g. $.checks.db (default $)")
    gate.add_argument("--web-success", metavar="COND", help="e.g. 'result == \"ok\"' (default: result == true)")
    up.add_argument("--dry-run", action="store_true", help="print the plan and change nothing")
    up.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    up.add_argument("--journal", type=_bounded(inputs.journal, "--journal"),
                    help="journal: a file (default in the user data dir, or $VMSSCTL_JOURNAL) or postgresql://…")
    _connection_flags(up)
    up.set_defaults(func=cmd_upgrade)


def _rollout_args(ro: argparse.ArgumentParser) -> None:
    ro_sub = ro.add_subparsers(dest="rollout_command", required=True, parser_class=_Parser)
    for name, helptext in (("list", "recent rollouts"), ("status", "one rollout: batches and events"),
                           ("pause", "pause after the current batch"), ("resume", "continue a paused or "
                           "interrupted rollout"), ("abort", "stop starting batches"),
                           ("rollback", "restore the previous image on every touched instance")):
        p = ro_sub.add_parser(name, help=helptext)
        if name != "list":
            p.add_argument("id", type=_bounded(inputs.text, "rollout id", 64), help="rollout id (r-…)")
        p.add_argument("--journal", type=_bounded(inputs.journal, "--journal"), help="journal: a file or postgresql://…")
        if name == "rollback":
            p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
        else:
            p.add_argument("-y", "--yes", action="store_true", help=argparse.SUPPRESS)
        if name in ("resume", "rollback"):
            _connection_flags(p)
        else:
            p.add_argument("-o", "--output", choices=("table", "json"), default="table")
        p.set_defaults(func=cmd_rollout)


def _fleet_args(fl: argparse.ArgumentParser) -> None:
    fl_sub = fl.add_subparsers(dest="fleet_command", required=True, parser_class=_Parser)
    for name, helptext in (("plan", "which sets, in which stage, estimated time; changes nothing"),
                           ("run", "run the fleet, after showing its stages and asking (running the same file "
                                   "again resumes a run still going, else starts a new run)"),
                           ("list", "the newest fleet runs of the database and where each stands"),
                           ("status", "where a fleet stands: its stages, each set's state and progress"),
                           ("abort", "start no further stage, and stop the sets' rollouts in flight"),
                           ("pause", "start no further set, and pause the sets' rollouts in flight"),
                           ("resume", "go on after a pause"),
                           ("approve", "let a stage that waits for approval go on (or approve one ahead)"),
                           ("reject", "refuse a stage's approval: the fleet halts with the reason"),
                           ("rollback", "every set the fleet run changed back to its previous image, newest stage "
                                        "first")):
        p = fl_sub.add_parser(name, help=helptext)
        if name in ("plan", "run"):
            p.add_argument("file", metavar="FILE", type=_bounded(inputs.path, "FILE"), help="fleet file (TOML)")
            p.add_argument("--max-sets", type=_bounded(inputs.count, "--max-sets", 1, HIGHEST_MAX_SETS),
                           default=DEFAULT_MAX_SETS, help=f"the most scale sets the fleet may select (default "
                                                          f"{DEFAULT_MAX_SETS}, at most {HIGHEST_MAX_SETS})")
        elif name != "list":
            p.add_argument("id", type=_bounded(inputs.text, "fleet id", 80), help="fleet run id (f-…)")
        if name in ("run", "rollback"):
            p.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
        if name in ("approve", "reject"):
            p.add_argument("--stage", help="the stage (default: the one the fleet waits for)")
        if name == "reject":
            p.add_argument("--reason", required=True, help="why: the fleet halts with it")
        if name == "status":
            p.add_argument("--events", action="store_true", help="also the fleet's events, in order")
        p.add_argument("--journal", type=_bounded(inputs.journal, "--journal"),
                       help="rollout journal (default: with a postgresql:// --database, that database)")
        p.add_argument("--database", type=_bounded(inputs.database_url, "--database"),
                       help="DBOS system database: sqlite:///PATH (default: fleets.sqlite beside the journal) or "
                            "postgresql://… shared by several workers")
        _connection_flags(p)
        p.set_defaults(func=cmd_fleet)


def _worker_args(wk: argparse.ArgumentParser) -> None:
    wk.add_argument("--database", required=True, type=_bounded(inputs.database_url, "--database"),
                    help="postgresql://USER@HOST:PORT/DB shared by every worker and by 'fleet run --database'")
    wk.add_argument("--executor-id", type=_bounded(inputs.name, "--executor-id"),
                    help="this worker's id (default: HOST-PID); a restarted worker with the same id recovers its own "
                         "fleets at once")
    wk.add_argument("--takeover-after", default="30s", type=_bounded(inputs.duration, "--takeover-after", 3600),
                    help="take over a worker silent this long (default 30s; at least three heartbeats)")
    wk.add_argument("--heartbeat", default="5s", type=_bounded(inputs.duration, "--heartbeat", 60),
                    help="how often this worker says it is alive (default 5s, at least 1s)")
    wk.set_defaults(func=cmd_worker)


def _dashboard_args(dash: argparse.ArgumentParser) -> None:
    dash.add_argument("--port", type=_bounded(inputs.count, "--port", 0, 65535), default=0,
                      help="0 = any free port")
    dash.add_argument("--refresh", default="5s", type=_bounded(inputs.duration, "--refresh", 3600),
                      help="how often to list an open scale set's instances (default 5s)")
    dash.add_argument("--token-file", type=_bounded(inputs.path, "--token-file"),
                      help="write the API token (a bearer for scripts, and for GET /login) to FILE, mode 0600")
    dash.add_argument("--journal", type=_bounded(inputs.journal, "--journal"),
                      help="rollout journal: a file (default in the user data dir, or $VMSSCTL_JOURNAL) or "
                           "postgresql://…")
    dash.add_argument("--database", type=_bounded(inputs.database_url, "--database"),
                      help="the fleets' DBOS database (default: fleets.sqlite beside the journal)")
    _connection_flags(dash)
    dash.set_defaults(func=cmd_dashboard)


def _heatmap_args(hm: argparse.ArgumentParser) -> None:
    _target_flags(hm)
    hm.add_argument("--watch", action="store_true", help="keep refreshing")
    hm.add_argument("--refresh", default="5s", type=_bounded(inputs.duration, "--refresh", 3600),
                    help="refresh interval with --watch (default 5s)")
    _connection_flags(hm)
    hm.set_defaults(func=cmd_heatmap)


def _demo_args(demo: argparse.ArgumentParser) -> None:
    demo.add_argument("-o", "--output", choices=("table", "json"), default="table")
    demo.add_argument("--version", default=emulator.DEMO_NEW, type=_bounded(inputs.version, "--version"),
                      help="image version to upgrade to")
    demo.add_argument("--time-scale", type=_bounded(inputs.number, "--time-scale", 0, 100_000), default=0.0,
                      help="simulated seconds per real second (default 0: the clock moves as vmssctl waits, so the "
                           "rollout runs as fast as the work allows and its simulated times are exact)")
    demo.set_defaults(func=cmd_demo)


# Each command: its name, its one-line help, and what adds its arguments. Only the command being run gets its
# arguments: --help and every command answer without building the others' (and argparse looking up a translation
# for each of their strings), 35-odd ms of a 100 ms start.
COMMANDS: tuple[tuple[str, str, Callable[[argparse.ArgumentParser], None]], ...] = (
    ("emulator", "run the local ARM emulator for scale sets (HTTPS)", _emulator_args),
    ("show", "show a scale set's model summary", _show_args),
    ("instances", "list a scale set's instances with UD/FD, power, health, model", _instances_args),
    ("doctor", "what would stop a rollout of a scale set, one line each (nothing is written): sign-in, "
               "subscription, the set, permissions, health signal, load balancers, the image", _doctor_args),
    ("upgrade", "move a scale set to a new image, batch by batch, with health gates", _upgrade_args),
    ("rollout", "list, inspect and steer rollouts from the journal", _rollout_args),
    ("fleet", "one image to many scale sets, in stages (a fleet file)", _fleet_args),
    ("worker", "run fleets from a shared PostgreSQL database, taking over dead workers", _worker_args),
    ("dashboard", "serve the live web console on 127.0.0.1", _dashboard_args),
    ("heatmap", "update domain x fault domain grid in the terminal", _heatmap_args),
    ("demo", "rehearse an upgrade of demo-vmss on an embedded emulator", _demo_args),
)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The command line's parser; given the arguments, only the command they name is given its own (every
    command is listed, so a typo is still told the choices)."""
    parser = _Parser(prog="vmssctl", description="Zero-downtime OS image upgrades for Azure VM Scale Sets.")
    parser.add_argument("--version", action="version", version=f"vmssctl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    named = None if argv is None else next((a for a in argv if not a.startswith("-")), "")
    for name, helptext, add_arguments in COMMANDS:
        p = sub.add_parser(name, help=helptext)
        if named is None or named == name:
            add_arguments(p)
    return parser


# ----------------------------------------------------------------------------- commands
def cmd_emulator(args: argparse.Namespace) -> int:
    from vmssctl.emulator.faults import FaultRule, ThrottleLimits
    from vmssctl.emulator.server import EmulatorConfig, EmulatorServer, instructions, run_loop

    try:
        rules = [FaultRule.parse(f) for f in args.fault]
        throttle = ThrottleLimits.parse(args.throttle)
    except ValueError as e:
        raise UsageError(str(e)) from None
    for name in ("error_rate", "throttle_rate"):
        if not 0 <= getattr(args, name) <= 1:
            raise UsageError(f"--{name.replace('_', '-')} must be between 0 and 1")
    if args.time_scale < 0 or args.page_size < 1 or not 0 <= args.port <= 65535:
        raise UsageError("--time-scale must be >= 0, --page-size >= 1, --port 0-65535")
    from vmssctl.emulator.persistence import StateError

    try:
        server = EmulatorServer(EmulatorConfig(
        host=args.host, port=args.port, state_dir=args.state_dir, time_scale=args.time_scale, demo=args.demo,
        images=args.images,
        seed=args.seed, page_size=args.page_size, throttle=throttle, faults=rules, error_rate=args.error_rate,
        throttle_rate=args.throttle_rate, latency_ms=args.latency_ms, retry_after=args.retry_after,
        subscriptions=args.subscriptions))
    except StateError as e:
        raise UsageError(str(e)) from None
    try:
        sock = server.bind()
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    print(instructions(server.info()), flush=True)
    run_loop(server.serve(sock, exit_on_failed_save=True))  # SIGINT/SIGTERM: a clean, state-saving exit
    if not server.saved_at_exit:
        print(f"error: the emulator state could not be saved: {server.emu.persistence.get('lastError')}",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _client(args: argparse.Namespace):
    from vmssctl.azure import compute_client, resolve_connection

    conn = resolve_connection(args.emulator, args.endpoint, args.ca, args.subscription)
    return conn, compute_client(conn)


def _api(args: argparse.Namespace) -> tuple[Connection, ScaleSetApi]:
    """The connection and the one scale set a command works on."""
    from vmssctl.azure import ScaleSetApi

    conn, client = _client(args)
    return conn, ScaleSetApi(client, args.resource_group, args.name)


def cmd_show(args: argparse.Namespace) -> int:
    """The set's model, and the load balancers in front of it (what each rule says of its VMs) when it has any."""
    from vmssctl import render
    from vmssctl.azure import NetworkApi, network_client
    from vmssctl.errors import ArmError

    conn, api = _api(args)
    ss = api.get()
    network = NetworkApi(network_client(conn))
    try:
        backends = network.backends(ss) if ss.fronted else []
        unreadable = None
    except ArmError as e:  # (no permission on the load balancer, say): the set is still shown, with why not
        backends, unreadable = [], f"cannot read its load balancers: {e}"
    finally:
        network.close()
        api.close()
    render.scale_set(ss, args.output, backends, unreadable)
    return EXIT_OK


def cmd_doctor(args: argparse.Namespace) -> int:
    """Read-only checks before a first rollout; exit 0 when nothing stands in the way, 1 when something does."""
    from vmssctl import doctor, render
    from vmssctl.azure import network_api
    from vmssctl.policy import RolloutPolicy
    from vmssctl.target import ImageChange

    policy = RolloutPolicy(strategy=args.strategy)
    change = ImageChange(sku=args.sku, version=args.version) if args.version or args.sku else None
    if change is not None:
        change.validate()
    conn, api = _api(args)
    network = network_api(conn)
    try:
        checks = doctor.run(conn, api, network, policy, change)
    finally:
        network.close()
        api.close()
    render.checks(checks, args.output)
    return EXIT_OK if all(c.ok is not False for c in checks) else EXIT_FAILED


def cmd_instances(args: argparse.Namespace) -> int:
    from vmssctl import render

    render.instances(_api(args)[1].instances(), args.output)
    return EXIT_OK


def _flag_gates(args: argparse.Namespace) -> list[dict]:
    """The gates given as flags, as the [[gates]] entries they stand for."""
    gates = []
    prom = {k: getattr(args, f"prometheus_{k}") for k in ("query", "success", "failure", "count", "interval")}
    if args.prometheus or any(prom.values()):
        if not (args.prometheus and prom["query"] and prom["success"]):
            raise UsageError("a Prometheus gate needs --prometheus URL, --prometheus-query and --prometheus-success")
        gates.append({"kind": "prometheus", "address": args.prometheus,
                      **{k: v for k, v in prom.items() if v is not None}})
    if args.web_url or args.web_jsonpath or args.web_success:
        if not args.web_url:
            raise UsageError("a web gate needs --web-url")
        gates.append({"kind": "web", "url": args.web_url,
                      **{k: v for k, v in (("jsonpath", args.web_jsonpath), ("success", args.web_success)) if v}})
    return gates


def _policy(args: argparse.Namespace):
    from dataclasses import replace

    from vmssctl import policy

    overrides = {k: getattr(args, k) for k in (
        "by", "batch_size", "batch_percent", "instances", "canary", "pause", "max_unavailable",
        "max_unhealthy_upgraded", "health_timeout", "rollback", "prioritize_unhealthy", "probe_url", "hook", "poll",
        "no_health_signal", "strategy", "max_surge", "surge_fallback", "allow_automatic", "windows", "drain",
        "drain_timeout", "drain_hook", "green_capacity", "bake", "delete_blue", "green_weight", "wait_for_image")}
    loaded = policy.load(args.policy, overrides)
    extra = _flag_gates(args)
    return replace(loaded, gates=(*loaded.gates, *extra)) if extra else loaded


def _sinks(args: argparse.Namespace) -> list:
    from vmssctl import render
    from vmssctl.rollout.events import JsonLines, PlainLog
    from vmssctl.rollout.view import LiveView

    if args.output == "json":
        return [JsonLines()]
    con = render.console()
    return [LiveView(con)] if con.is_terminal else [PlainLog(con)]


def cmd_upgrade(args: argparse.Namespace) -> int:
    from vmssctl import render
    from vmssctl.rollout.journal import Journal
    from vmssctl.target import ImageChange
    from vmssctl.upgrade import prepare

    change = ImageChange(args.publisher, args.offer, args.sku, args.version, args.image_id, args.custom_uri)
    change.validate()
    policy = _policy(args)
    journal = Journal(args.journal)
    conn, api = _api(args)
    prepared = prepare(api, journal, conn, change, policy)
    if prepared.nothing_to_do:
        render.message(args.output, "nothing to do: every instance in scope already runs the latest model",
                       {"type": "nothing_to_do", "plan": prepared.to_json()})
        return EXIT_OK
    render.plan(prepared, args.output)
    if args.dry_run:
        return EXIT_OK
    if not args.yes:
        if not sys.stdin.isatty():
            raise UsageError("refusing to change the scale set without confirmation: pass --yes (or run on a terminal)")
        answer = input("Proceed? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            raise NotConfirmed("nothing changed")
    from vmssctl.rollout.workflow import drive
    from vmssctl.upgrade import begin

    rollout = begin(journal, conn, api, prepared)
    sinks = _sinks(args)
    try:
        return drive(journal, conn, api, rollout, sinks)
    except KeyboardInterrupt:
        print(f"interrupted: rollout {rollout.id} stopped where it was; finish it with 'vmssctl rollout resume "
              f"{rollout.id}' or undo it with 'vmssctl rollout rollback {rollout.id}'", file=sys.stderr)
        return EXIT_ABORTED
    except (UsageError, BrokenPipeError):
        raise
    except Exception as e:  # ARM (or the emulator) gave up on us mid-rollout: say how to carry on
        message, _ = describe_error(e)
        print(f"error: {inputs.one_line(message)}; rollout {rollout.id} is resumable with "
              f"'vmssctl rollout resume {rollout.id}'",
              file=sys.stderr)
        return EXIT_FAILED
    finally:
        for s in sinks:
            s.close()


def cmd_fleet(args: argparse.Namespace) -> int:
    from vmssctl.fleet.commands import cmd_fleet as run_fleet

    return run_fleet(args)


def cmd_worker(args: argparse.Namespace) -> int:
    import os
    import socket

    from vmssctl.fleet.worker import BEATS_BEFORE_DEAD, serve

    if args.heartbeat < 1:
        raise UsageError("--heartbeat must be at least 1s")
    if args.takeover_after < BEATS_BEFORE_DEAD * args.heartbeat:
        raise UsageError(f"--takeover-after must be at least {BEATS_BEFORE_DEAD} heartbeats "
                         f"({BEATS_BEFORE_DEAD * args.heartbeat:.0f}s): a worker is not dead for missing fewer")
    return serve(args.database, args.executor_id or f"{socket.gethostname()}-{os.getpid()}", args.takeover_after,
                 args.heartbeat)


def cmd_rollout(args: argparse.Namespace) -> int:
    from vmssctl import render
    from vmssctl.rollout.journal import Journal

    journal = Journal(args.journal)
    what = args.rollout_command
    if what == "list":  # (the journal and the table: neither the Azure SDK nor DBOS to import)
        render.rollouts(journal.recent(), args.output)
        return EXIT_OK
    r = journal.get(args.id)
    if what == "status":
        render.rollout_status(r, journal.batches(r.id), journal.events(r.id), args.output)
        return EXIT_OK
    from vmssctl.azure import ScaleSetApi
    from vmssctl.rollout.workflow import drive
    from vmssctl.upgrade import reopen, steer

    if what == "rollback" and r.state != "rolled_back":
        _confirm_rollback(args, journal, r)
    done = steer(journal, r, what)
    if done is not None:
        kind, text = done
        render.message(args.output, text, {"type": kind, "rollout": r.id})
        return EXIT_OK
    # resume / rollback and no process runs it: run the engine here, connected as the rollout was
    stored = r.connection or {}
    if not (args.emulator or args.endpoint or args.subscription or os.environ.get("VMSSCTL_ENDPOINT")) and stored:
        from vmssctl.azure import compute_client, connection_from_json

        conn = connection_from_json(stored)
        client = compute_client(conn)
    else:
        conn, client = _client(args)
    if (conn.subscription.lower(), (conn.endpoint or "").lower()) != (r.subscription.lower(),
                                                                        (r.endpoint or "").lower()):
        raise UsageError(f"rollout {r.id} ran against {r.endpoint or 'Azure'} subscription {r.subscription}; "
                         "connect to the same place to resume it")
    sinks = _sinks(args)
    try:
        return drive(journal, conn, ScaleSetApi(client, r.resource_group, r.name),
                     reopen(journal, r, rollback=what == "rollback"), sinks)
    finally:
        for s in sinks:
            s.close()


def _confirm_rollback(args: argparse.Namespace, journal, r) -> None:
    """What a rollback will do, and the question (as `vmssctl upgrade` asks before it changes anything)."""
    from vmssctl.model import ImageRef

    touched = sorted({i for b in journal.batches(r.id) if b.kind == "forward" for i in b.instance_ids})
    lines = [f"Roll back rollout {r.id} ({r.state}) of {r.resource_group}/{r.name}: the model back to "
             f"{ImageRef(**r.previous)}, and the {len(touched)} instance(s) it upgraded"
             + (f" ({', '.join(touched[:20])}{' …' if len(touched) > 20 else ''})" if touched else "")]
    out = sys.stderr if getattr(args, "output", "table") == "json" else sys.stdout
    for line in lines:
        print(inputs.one_line(line), file=out)
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError("refusing to roll back without confirmation: pass --yes (or run on a terminal)")
    if input("Roll back? [y/N] ").strip().lower() not in ("y", "yes"):
        raise NotConfirmed("nothing changed")


def cmd_dashboard(args: argparse.Namespace) -> int:
    import socket

    from vmssctl.dashboard.app import Dashboard, run_forever

    interval = args.refresh
    if interval < 1:
        raise UsageError("--refresh must be at least 1s")
    conn, client = _client(args)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", args.port))
    except OSError as e:
        raise UsageError(f"cannot listen on 127.0.0.1:{args.port}: {e.strerror}") from None
    sock.listen(128)
    d = Dashboard(conn, client, args.journal, interval, sock.getsockname()[1], fleet_database=args.database)
    if args.token_file:
        from vmssctl.emulator.server import write_private

        try:
            write_private(Path(args.token_file), d.token.encode())
        except OSError as e:
            raise UsageError(f"cannot write --token-file {args.token_file}: {e.strerror}") from None
    print(f"vmssctl dashboard: {d.login_link()}", flush=True)
    print("  (a one-time login link: it stops working once opened; the API token is "
          + (f"in {args.token_file})" if args.token_file else "not shown: pass --token-file FILE for scripts)"),
          flush=True)
    run_forever(d, sock)
    return EXIT_OK


def cmd_heatmap(args: argparse.Namespace) -> int:
    import time

    from vmssctl import render

    interval = max(1.0, args.refresh)
    _, api = _api(args)
    if args.output == "json":
        import json

        print(json.dumps([i.to_json() for i in api.instances()], indent=2))
        return EXIT_OK
    if not args.watch:
        render.heatmap(api.get(), api.instances())
        return EXIT_OK
    from rich.live import Live

    with Live(console=render.console(), refresh_per_second=2) as live:
        while True:
            live.update(render.heatmap_table(api.get().fault_domains, api.instances()))
            time.sleep(max(1.0, interval))


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job, rehearsed: an embedded emulator, demo-vmss, a real rollout, the availability record."""
    import tempfile

    from vmssctl import render
    from vmssctl.azure import Connection, ScaleSetApi, compute_client
    from vmssctl.emulator.admin import AdminClient
    from vmssctl.emulator.server import DEMO_LB, DEMO_RG, DEMO_VMSS, EmulatorConfig, EmulatorServer
    from vmssctl.policy import load
    from vmssctl.rollout.journal import Journal
    from vmssctl.rollout.workflow import drive
    from vmssctl.target import ImageChange
    from vmssctl.upgrade import begin, prepare

    server = EmulatorServer(EmulatorConfig(demo=True, time_scale=args.time_scale)).start_in_thread()
    info = server.info()
    con = render.console()
    try:
        conn = Connection(info["subscription"], info["endpoint"], info["ca"], info["token"])
        api = ScaleSetApi(compute_client(conn), DEMO_RG, DEMO_VMSS)
        admin = AdminClient(conn)
        if args.output != "json":
            pace = (f"{args.time_scale:g} simulated seconds per second" if args.time_scale else
                    "its clock moves as vmssctl waits: simulated time, exact, as fast as the work allows")
            con.print(f"[bold]Embedded emulator[/] at {info['endpoint']} ({pace}); everything below goes through "
                      "azure-mgmt-compute over HTTPS")
            render.scale_set(api.get(), "table")
            render.heatmap(api.get(), api.instances())
        journal = Journal(Path(tempfile.mkdtemp(prefix="vmssctl-demo-")) / "journal.sqlite")
        # drained batches, and each one judged on the requests its users lost too (the emulator counts them)
        policy = load(None, {"canary": 1, "batch_percent": 20, "pause": "30s", "rollback": "auto", "drain": "lb",
                             "drain_timeout": "15s", "gates": [{"kind": "requests", "source": "emulator",
                                                                "load_balancer": f"{DEMO_RG}/{DEMO_LB}",
                                                                "max_failed": "0.1%"}]})
        prepared = prepare(api, journal, conn, ImageChange(version=args.version), policy)
        render.plan(prepared, args.output)
        t0 = admin.clock()["now"]
        started = admin.call("POST", "traffic", {"resourceGroup": DEMO_RG, "loadBalancer": DEMO_LB, "rule": "http",
                                                 "rps": 200, "meanDurationSeconds": 0.2})
        sinks = _sinks(args)
        try:
            code = drive(journal, conn, api, begin(journal, conn, api, prepared), sinks)
        finally:
            for sink in sinks:
                sink.close()
        stats = admin.stats(since=t0)
        record = stats["scaleSets"][f"{DEMO_RG}/{DEMO_VMSS}"]
        users = next(x for x in stats["traffic"] if x["id"] == started["id"])
        floor = prepared.plan.floor
        verdict = "never below the floor" if record["minHealthy"] >= floor else "BELOW THE FLOOR"
        if args.output == "json":
            import json

            print(json.dumps({"type": "availability", "floor": floor, **record}))
            print(json.dumps({"type": "requests", **users}))
        else:
            render.instances(api.instances(), "table")
            con.print(f"[bold]Availability record[/] (from the emulator): healthy instances during the rollout "
                      f"min {record['minHealthy']} of {record['capacity']}, floor {floor}: [bold]{verdict}[/]; "
                      f"running min {record['minRunning']}; {_times(record['upgrades'])}")
            by = users["failedBy"]
            con.print(f"[bold]Requests[/] through {DEMO_LB} during the rollout (emulated users, {users['rps']:g}/s): "
                      f"{users['served']:,} served, [bold]{users['failed']:,} failed[/] ({by['cut']:,} in flight on a "
                      f"VM as it stopped, {by['probe-lag']:,} sent to a stopped VM before its probe marked it "
                      f"down, {by['no-backend']:,} with no backend)")
        api.close()
        return code
    finally:
        server.stop()


def _times(upgrades: dict[str, int]) -> str:
    """'each instance upgraded once' (or how often each was), from the emulator's per-instance counts."""
    counts = sorted(set(upgrades.values()))
    if counts == [1]:
        return f"each of {len(upgrades)} instances upgraded once"
    return "upgrades per instance: " + ", ".join(f"{n}x {sum(1 for v in upgrades.values() if v == n)}"
                                                 for n in counts)


# ------------------------------------------------------------------------------- entry
def describe_error(e: BaseException) -> tuple[str, int]:
    """Any failure as (one line naming the cause, exit code). Unknown ones say how to see the traceback."""
    from vmssctl.errors import VmssctlError

    if e.__class__.__module__.startswith("azure."):  # an SDK error that escaped the seam (a bug, but say it well)
        from vmssctl.azure import translate

        e = translate(e)
    if isinstance(e, VmssctlError):
        return str(e), e.exit_code
    if isinstance(e, OSError):
        return f"{e.strerror or e}{f': {e.filename}' if getattr(e, 'filename', None) else ''}", EXIT_FAILED
    return (f"internal error: {e.__class__.__name__}: {str(e).splitlines()[0] if str(e) else ''} "
            "(set VMSSCTL_DEBUG=1 to see the traceback)"), EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    code = _main(argv)
    durable = sys.modules.get("vmssctl.durable")
    if durable is not None and durable.abandoned():
        # Ctrl-C while DBOS's thread drives a rollout: leave it as a crash would (the engine is made for that;
        # running the command again resumes it) instead of waiting at exit for that thread to finish the rollout
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _main(argv: list[str] | None) -> int:
    try:
        args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
        import logging  # (once the arguments are good: --help and a typo answer without it)

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # The SDK logs each retried request at WARNING; our own messages say what matters.
        logging.getLogger("azure").setLevel(logging.ERROR)
        func: Callable[[argparse.Namespace], int] = args.func
        return func(args)
    except UsageError as e:
        print(f"error: {inputs.one_line(str(e))}", file=sys.stderr)
        return EXIT_USAGE
    except NotConfirmed as e:  # the person said no: not an error
        print(str(e), file=sys.stderr)
        return EXIT_ABORTED
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return EXIT_ABORTED
    except BrokenPipeError:  # e.g. 'vmssctl rollout list -o json | head': the reader has what it wanted
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED
    except Exception as e:  # every failure is one line; VMSSCTL_DEBUG=1 shows the traceback of a bug
        if os.environ.get("VMSSCTL_DEBUG"):
            raise
        message, code = describe_error(e)
        print(f"error: {inputs.one_line(message)}", file=sys.stderr)
        return code
