"""`vmssctl fleet plan|run|list|status|pause|resume|abort|approve|reject|rollback`: the fleet file, the scale
sets, and DBOS. Every command that shows a fleet renders its one FleetView (``fleet/view.py``)."""

from __future__ import annotations

import argparse
import getpass
import json
import math
import os
import socket
import sys
from dataclasses import replace
from typing import Any

from vmssctl import inputs
from vmssctl.errors import NotConfirmed, UsageError, VmssctlError
from vmssctl.fleet.spec import FleetSpec, StagePlan, assign, parse
from vmssctl.fleet.view import LIVE, RUNNING, FleetView, short_subscription
from vmssctl.rollout.journal import MOVING

EXIT_OK, EXIT_FAILED, EXIT_ABORTED = 0, 1, 3
EXISTING = ("list", "status", "abort", "pause", "resume", "approve", "reject", "rollback")


def cmd_fleet(args: argparse.Namespace) -> int:
    from vmssctl.rollout.journal import Journal

    if args.journal and (args.database or "").startswith("postgresql://") and \
            not args.journal.startswith("postgresql://"):
        raise UsageError("with --database postgresql://…, the sets' rollouts are journaled in that database (workers "
                         "on any machine share it): leave --journal out")
    journal = Journal(args.journal or (args.database if (args.database or "").startswith("postgresql://") else None))
    database = args.database or _default_database(journal.location)
    if args.fleet_command in EXISTING:
        return _existing(args, journal, database)
    return _new(args, journal, database)


# ------------------------------------------------------------------------------------------- plan, run
def _new(args: argparse.Namespace, journal, database: str) -> int:
    from vmssctl.azure import compute_client, list_set_refs, resolve_connection

    conn = resolve_connection(args.emulator, args.endpoint, args.ca, args.subscription)
    text = inputs.read_small_file(args.file, "FILE")
    spec = parse(text, args.file)
    clients = {sub: compute_client(replace(conn, subscription=sub))
               for sub in (spec.subscriptions or (conn.subscription,))}
    plans = assign(spec, [r for sub, client in clients.items() for r in list_set_refs(client, sub)], args.max_sets)
    pinned = _pinned(conn, spec, plans)
    if args.fleet_command == "plan":
        _print_plan(args.output, spec, plans, _estimates(clients, journal, conn, spec, plans), pinned)
        return EXIT_OK
    from vmssctl import durable
    from vmssctl.fleet import run

    workers = database.startswith("postgresql://")
    if not workers:
        run.launch(database)  # (recovers an interrupted run of this database: running the file again resumes it)
    try:
        c = durable.client(database, None if not workers else
                           f"no vmssctl worker has prepared {database.split('@')[-1]} yet: start one with "
                           "'vmssctl worker --database …'")
        try:
            _, new = run._run_to_start(run.fleet_id(text, conn.to_json()), c.list_workflows)
        finally:
            c.destroy()
        if new:
            _confirm(args, [*_plan_lines(spec, plans), *([pinned] if pinned else []), f"Run fleet '{spec.name}'?"],
                     "run the fleet")
        journal_input = _journal_input(journal, database)
        if workers:  # hand it to the workers sharing the database, and watch
            fid, new = run.hand_to_workers(database, text, plans, conn.to_json(), journal_input)
        else:
            fid, new = run.start(text, plans, conn.to_json(), journal_input)
        sets = sum(len(p.sets) for p in plans)
        _say(args.output, {"type": "fleet", "fleet": fid, "new": new, "database": database.split("://")[0],
                           "workers": workers},
             f"fleet {fid}: {'started' if new else 'running already; watching it'}: {sets} scale set(s) in "
             f"{len(plans)} stage(s)" + (", handed to the workers" if workers and new else ""))
        fv = _watch(args, database, journal, fid)
    finally:
        if not workers:
            durable.shutdown()
    if fv is None:
        return EXIT_FAILED
    return {"succeeded": EXIT_OK, "aborted": EXIT_ABORTED}.get(fv.state, EXIT_FAILED)


def _watch(args: argparse.Namespace, database: str, journal, fid: str) -> FleetView | None:
    """Follow the fleet's events until it ends: each as a line (JSON, or text without a terminal), or a live view
    of the fleet on a terminal; then the fleet as it ended. A database that goes away is waited out."""
    from vmssctl import durable, reconnect
    from vmssctl.fleet import run

    c = durable.client(database, wait=math.inf)  # a watcher waits out the database going away, however long
    live = None
    if args.output != "json":
        from vmssctl import render

        con = render.console()
        if con.is_terminal:
            from rich.live import Live

            live = Live(console=con, refresh_per_second=4, transient=False)
            live.start()
    try:
        for event in follow(c, fid):
            if event is not None and live is None:
                _say(args.output, event, _line(event))
            if live is not None:
                fv = reconnect.patiently(lambda: run.load(c, fid, journal), f"following fleet {fid}")
                if fv is not None:
                    live.update(_rich_view(fv))
        fv = reconnect.patiently(lambda: run.load(c, fid, journal), f"following fleet {fid}")
        if live is not None and fv is not None:
            live.update(_rich_view(fv))  # the live view ends on the fleet as it ended (and stays on the screen)
    finally:
        if live is not None:
            live.stop()
        c.destroy()
    if fv is not None and live is None:
        _show(args.output, fv)
    return fv


def follow(c, run_id: str, tick: float = 2.0):
    """The events of a run as they are written, until it ends; None every ``tick`` seconds nothing came (a moment
    to refresh a live view). A database that goes away is waited out, and reading resumes where it was."""
    from dbos._error import DBOSStreamTimeoutError

    from vmssctl import reconnect

    offset = 0
    while True:
        try:
            for value in c.read_stream(run_id, "events", offset=offset, timeout_seconds=tick):
                offset += 1
                yield value
            return  # the run ended and every event was read
        except DBOSStreamTimeoutError:
            yield None
        except Exception as e:
            if not reconnect.is_disconnect(e):
                raise
            reconnect.patiently(lambda: c.list_workflows(workflow_ids=[run_id], load_input=False, load_output=False),
                                f"following fleet {run_id}", first_failure=e)


# ------------------------------------------------------------------------------------------- existing fleets
def _existing(args: argparse.Namespace, journal, database: str) -> int:
    """list, status, steering and approvals read and write through a DBOS client (nothing runs here); a rollback
    runs here (SQLite) or is handed to the workers (PostgreSQL)."""
    from vmssctl import durable
    from vmssctl.fleet import run

    where = f"the fleet database {database.split('@')[-1]}"
    c = durable.client(database)
    try:
        if args.fleet_command == "list":
            fleets = durable.reading(c, lambda: run.recent(c, journal), where)
            _list(args.output, fleets)
            return EXIT_OK
        fid = inputs.text(args.id, "fleet id", 80)
        found = durable.reading(c, lambda: c.list_workflows(workflow_ids=[fid], load_input=True,
                                                            load_output=False), where)
        if not found or found[0].name != run.fleet_workflow.__qualname__:
            raise UsageError(f"no fleet '{fid}' in {where} (vmssctl fleet list shows them)")
        status = found[0]
        conn = _connection(args, run.connection_of(status))
        fv = durable.reading(c, lambda: run.load(c, fid, journal, _now(conn)), where)
        assert fv is not None
        what = args.fleet_command
        if what == "status":
            if args.events:  # the fleet's events, then its rollbacks'
                streams = [fid, *[w.workflow_id for w in run.rollback_runs(c.list_workflows, fid)]]
                for e in [e for w in streams for e in run.stream(c, w)]:
                    _say(args.output, e, _line(e))
            _show(args.output, fv)
            return EXIT_OK
        if what in ("abort", "pause", "resume"):
            return _steer(args, c, journal, fv, status, what)
        if what in ("approve", "reject"):
            return _decide(args, c, fv)
    finally:
        c.destroy()
    return _rollback(args, journal, database, fv, status, conn)


def _connection(args: argparse.Namespace, stored: dict):
    """The connection the command was given, else the one the fleet recorded (so `fleet status ID` needs no flags)."""
    from vmssctl.azure import connection_from_json, resolve_connection

    if args.emulator or args.endpoint or args.subscription or os.environ.get("VMSSCTL_ENDPOINT"):
        return resolve_connection(args.emulator, args.endpoint, args.ca, args.subscription)
    if not stored:
        raise UsageError("the fleet recorded no connection: pass --emulator or --subscription")
    return connection_from_json(stored)


def _now(conn) -> float | None:
    """Now on the fleet's clock (the emulator's simulated one), for a bake's time left; None if it cannot be read."""
    from vmssctl.rollout.clock import clock_for

    try:
        return clock_for(conn).now()
    except VmssctlError:
        return None


def _who() -> str:
    """Who steers or approves, as the record says it: the user and machine of the command."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return f"{user}@{socket.gethostname()}"


def _steer(args: argparse.Namespace, c, journal, fv: FleetView, status, op: str) -> int:
    from vmssctl.fleet import run

    if status.status not in RUNNING or fv.state not in LIVE or fv.state == "rolling back":
        raise UsageError(f"fleet {fv.fleet} is {fv.state}: there is nothing to {op}")
    if op == "pause" and fv.state == "paused":
        raise UsageError(f"fleet {fv.fleet} is paused already: 'vmssctl fleet resume {fv.fleet}' lets it go on")
    if op == "resume" and fv.state != "paused":
        raise UsageError(f"fleet {fv.fleet} is {fv.state}, not paused: there is nothing to resume")
    c.send(fv.fleet, {"op": op, "by": _who()}, topic=run.CONTROL)
    asked = _steer_sets(journal, fv, op)
    what = {"abort": "no set starts from now on", "pause": "no set starts until 'fleet resume'",
            "resume": "sets start again"}[op]
    _say(args.output, {"type": f"fleet_{op}_requested", "fleet": fv.fleet, "rollouts": asked},
         f"fleet {fv.fleet}: {what}; asked {len(asked)} rollout(s) in flight to {op}")
    return EXIT_OK


def _steer_sets(journal, fv: FleetView, op: str) -> list[str]:
    """Ask the rollouts of the fleet's sets that are running now to abort, pause or resume (through the journal,
    as `vmssctl rollout abort|pause|resume` does): they act at their next turn."""
    from vmssctl.rollout import claim
    from vmssctl.rollout.journal import scale_set_key

    out = []
    for v in fv.sets:
        r = journal.active_for(scale_set_key(v.subscription, v.resource_group, v.name))
        if r is not None and claim.running(journal, r):
            journal.request(r.id, op)
            out.append(r.id)
    return out


def _decide(args: argparse.Namespace, c, fv: FleetView) -> int:
    """Approve (or reject) a stage: the one the fleet waits for, or with --stage one of the stages that ask for an
    approval (ahead of time, too); recorded with who decided."""
    from vmssctl.fleet import run

    op = args.fleet_command
    if fv.state not in LIVE or fv.state == "rolling back":
        raise UsageError(f"fleet {fv.fleet} is {fv.state}: there is nothing to {op}")
    stage = inputs.label(args.stage, "--stage", 100) if args.stage else None
    when = None
    if stage is None:
        if fv.waiting is None:
            raise UsageError(f"fleet {fv.fleet} is not waiting for an approval ({fv.headline()}): name a stage "
                             "to decide ahead with --stage NAME")
        stage, when = fv.waiting["stage"], fv.waiting["when"]
    known = {s.name.lower(): s for s in fv.stages}
    sv = known.get(stage.lower())
    if sv is None:
        raise UsageError(f"fleet {fv.fleet} has no stage '{stage}' (its stages: "
                         f"{', '.join(s.name for s in fv.stages)})")
    if not (sv.approve or sv.approve_after):
        raise UsageError(f"stage '{sv.name}' of fleet {fv.fleet} asks for no approval")
    if sv.state in ("done", "skipped", "rejected", "aborted", "halted") and not \
            (fv.waiting and fv.waiting["stage"] == sv.name):
        raise UsageError(f"stage '{sv.name}' of fleet {fv.fleet} is {sv.state}: there is nothing to {op}")
    if fv.waiting and fv.waiting["stage"] == sv.name:
        when = fv.waiting["when"]
    message: dict = {"op": op, "stage": sv.name, "when": when, "by": _who()}
    if op == "reject":
        if not args.reason:
            raise UsageError("a rejection needs --reason TEXT: the fleet halts with it")
        message["reason"] = inputs.label(args.reason, "--reason", 500)
    c.send(fv.fleet, message, topic=run.CONTROL)
    done = "approved" if op == "approve" else "rejected"
    _say(args.output, {"type": f"stage_{done}_sent", "fleet": fv.fleet, "stage": sv.name, "when": when,
                       "by": message["by"]},
         f"fleet {fv.fleet}: stage '{sv.name}' {done}" + ("" if when else " ahead of time") + f" by {message['by']}")
    return EXIT_OK


def _rollback(args: argparse.Namespace, journal, database: str, fv: FleetView, status, conn) -> int:
    """Every set the fleet run changed, back to its previous image: shown, confirmed, then run (SQLite: here;
    PostgreSQL: by the workers), newest stage first."""
    from vmssctl import durable
    from vmssctl.fleet import run

    if status.status in RUNNING and fv.state != "rolling back":
        raise UsageError(f"fleet {fv.fleet} is still {fv.state}: abort it first ('vmssctl fleet abort {fv.fleet}')")
    touched = [r for r in journal.of_fleet([fv.fleet]) if r.state != "rolled_back"]
    if not touched and fv.state != "rolling back":
        raise UsageError(f"fleet {fv.fleet} changed no scale set that is not rolled back already: nothing to roll back")
    if fv.state != "rolling back":
        from vmssctl.model import ImageRef

        lines = [f"Roll back fleet {fv.fleet} ('{fv.name}'): {len(touched)} scale set(s), newest stage first"]
        lines += [f"  {r.resource_group}/{r.name} ({short_subscription(r.subscription)}): rollout {r.id} ({r.state}) "
                  f"back to {ImageRef(**r.previous)}" for r in touched[:50]]
        if len(touched) > 50:
            lines.append(f"  … and {len(touched) - 50} more")
        _confirm(args, [*lines, "Roll these back?"], "roll the fleet back")
    plan = run.plan_of(status)
    journal_input = _journal_input(journal, database)
    if database.startswith("postgresql://"):
        rid = _hand_rollback(database, fv.fleet, plan, conn.to_json(), journal_input)
        c = durable.client(database)
        try:
            for event in follow(c, rid):
                if event is not None:
                    _say(args.output, event, _line(event))
            after = durable.reading(c, lambda: run.load(c, fv.fleet, journal), "the fleet database")
        finally:
            c.destroy()
    else:
        run.launch(database)
        try:
            from dbos import DBOS

            rid = run.start_rollback(fv.fleet, plan, conn.to_json(), journal_input, DBOS.list_workflows)
            for event in run.events(rid):
                _say(args.output, event, _line(event))
        finally:
            durable.shutdown()
        c = durable.client(database)
        try:
            after = run.load(c, fv.fleet, journal)
        finally:
            c.destroy()
    if after is not None:
        _show(args.output, after)
    return EXIT_OK if after is not None and after.state == "rolled back" and not after.rollback_failed else EXIT_FAILED


def _hand_rollback(database: str, run_id: str, plan: list[dict], connection: dict, journal: str) -> str:
    """Enqueue the rollback for the workers (a process of its own would take other fleets' sets from the queue)."""
    from dbos import EnqueueOptions

    from vmssctl import durable
    from vmssctl.fleet import run

    c = durable.client(database)
    try:
        found = run.rollback_runs(c.list_workflows, run_id)
        live = [w for w in found if w.status in RUNNING]
        if live:
            return live[-1].workflow_id
        rid = f"{run_id}-rollback" if not found else f"{run_id}-rollback.{run._run_number(found[-1].workflow_id) + 1}"
        options: EnqueueOptions = {"queue_name": run.FLEETS_QUEUE, "workflow_name": run.rollback_workflow.__qualname__,
                                   "workflow_id": rid, "app_version": durable.APP_VERSION}
        c.enqueue(options, run_id, plan, connection, journal)
        return rid
    finally:
        c.destroy()


def _confirm(args: argparse.Namespace, lines: list[str], what: str) -> None:
    """Show what is about to happen and ask, as `vmssctl upgrade` does; --yes answers for scripts."""
    for line in lines[:-1]:
        print(inputs.one_line(line), file=sys.stderr if args.output == "json" else sys.stdout)
    if args.yes:
        return
    if not sys.stdin.isatty():
        raise UsageError(f"refusing to {what} without confirmation: pass --yes (or run on a terminal)")
    answer = input(f"{lines[-1]} [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise NotConfirmed("nothing changed")


def _journal_input(journal, database: str) -> str:
    """How the fleet's workflows name the sets' journal: the fleet database itself by a marker (its URL may carry a
    password, and workflow inputs are stored), else its file."""
    from vmssctl.durable import THIS_DATABASE

    return THIS_DATABASE if journal.url == database else journal.location


def _default_database(journal_path) -> str:
    from vmssctl.durable import default_database

    return default_database(journal_path)


def _estimates(clients: dict, journal, conn, spec: FleetSpec, plans: list[StagePlan]) -> dict[str, dict]:
    """Each set's own plan (read-only: the model and one listing), or why it would be refused."""
    from vmssctl import upgrade
    from vmssctl.azure import ScaleSetApi

    out: dict[str, dict[str, Any]] = {}
    for p in plans:
        for ref in p.sets:
            api = ScaleSetApi(clients[ref.subscription], ref.resource_group, ref.name)
            try:
                prepared = upgrade.prepare(api, journal, replace(conn, subscription=ref.subscription), spec.target,
                                           spec.policy)
                out[ref.key] = {"batches": len(prepared.plan.batches), "instances": prepared.plan.pending,
                                "seconds": prepared.estimate_seconds(), "simulated": prepared.simulated}
            except VmssctlError as e:
                out[ref.key] = {"refused": str(e)}
    return out


def _plan_lines(spec: FleetSpec, plans: list[StagePlan]) -> list[str]:
    """The stages as a person approves them before a run: which sets, how many at a time, bakes and approvals."""
    subs = {r.subscription for p in plans for r in p.sets}
    out = [f"Fleet '{spec.name}': {sum(len(p.sets) for p in plans)} scale set(s) in {len(plans)} stage(s)"
           + (f" across {len(subs)} subscriptions" if len(subs) > 1 else "") + f", to {spec.target.describe()}"]
    for n, p in enumerate(plans, 1):
        names = [r.short if len(subs) <= 1 else f"{short_subscription(r.subscription)}/{r.short}" for r in p.sets]
        out.append(f"  {n}. {p.stage.name}: {len(p.sets)} set(s), {p.stage.concurrency} at a time"
                   + (f", then bake {p.stage.bake:.0f}s" if p.stage.bake else "")
                   + (", approval before it starts" if p.stage.approve else "")
                   + (", approval after it" if p.stage.approve_after else "")
                   + (f": {', '.join(names[:8])}" + (f" … (+{len(names) - 8})" if len(names) > 8 else "")
                      if names else ""))
    out.append(f"  halt: when more than {spec.max_failed_percent:g} % of the sets started so far failed"
               if spec.max_failed_percent is not None else f"  halt: when more than {spec.max_failed} set(s) failed")
    return out


def _pinned(conn, spec: FleetSpec, plans: list[StagePlan]) -> str | None:
    """With ``version = "latest"``: which version every set will get (the newest published in all the fleet's
    regions, as the run resolves it once), or why none can be."""
    change = {k: v for k, v in vars(spec.target).items() if v is not None}
    if str(change.get("version", "")).lower() != "latest":
        return None
    from vmssctl.fleet.run import pin_latest

    said = pin_latest(conn.to_json(), change, [r.key for p in plans for r in p.sets])
    return (f"  'latest' is {said['version']} for every set: the newest published in all of "
            f"{', '.join(said['regions'])}") if "version" in said else f"  'latest': {said['error']}"


def _print_plan(output: str, spec: FleetSpec, plans: list[StagePlan], est: dict[str, dict],
                pinned: str | None = None) -> None:
    total = 0.0
    stages: list[dict[str, Any]] = []
    for p in plans:
        longest = max((est[r.key].get("seconds", 0.0) for r in p.sets), default=0.0)
        waves = math.ceil(len(p.sets) / p.stage.concurrency) if p.sets else 0
        seconds = waves * longest + (p.stage.bake if p is not plans[-1] else 0.0)
        total += seconds
        stages.append({"stage": p.stage.name, "concurrency": p.stage.concurrency, "bake": p.stage.bake,
                       "approve": p.stage.approve, "approve_after": p.stage.approve_after, "seconds": seconds,
                       "sets": [{"set": r.short, "subscription": r.subscription, **est[r.key]} for r in p.sets]})
    if output == "json":
        print(json.dumps({"type": "fleet_plan", "name": spec.name, "stages": stages, "seconds": total,
                          **({"latest": pinned.strip()} if pinned else {})}))
        return
    print(inputs.one_line(f"Fleet plan '{spec.name}': {sum(len(p.sets) for p in plans)} scale set(s), "
                          f"{len(plans)} stage(s), estimate ~{total / 60:.0f} min"))
    for n, s in enumerate(stages, 1):
        print(inputs.one_line(
            f"  {n}. {s['stage']}: {len(s['sets'])} set(s), {s['concurrency']} at a time"
            + (f", then bake {s['bake']:.0f}s" if s["bake"] else "")
            + (", approval before it starts" if s["approve"] else "")
            + (", approval after it" if s["approve_after"] else "") + f" (~{s['seconds'] / 60:.0f} min)"))
        for item in s["sets"]:
            what = (f"refused: {item['refused']}" if "refused" in item else
                    f"{item['instances']} instance(s) in {item['batches']} batch(es)")
            print(inputs.one_line(f"       {item['set']}: {what}"))
    if pinned:
        print(inputs.one_line(pinned))
    print(_plan_lines(spec, plans)[-1])


# ------------------------------------------------------------------------------------------- rendering
def _line(event: dict) -> str:
    """One event as a line of text (the event log of `fleet run` without a terminal, `fleet status --events`)."""
    kind = event.get("type")
    stage = event.get("stage")
    if kind == "version_pinned":
        return f"'latest' is {event.get('version')} for every set (all of {', '.join(event.get('regions') or [])})"
    if kind == "stage_started":
        return f"stage {event['number']} '{stage}': {len(event.get('sets', []))} set(s)"
    if kind in ("set_finished", "set_rolled_back"):
        extra = f" ({event['error']})" if event.get("error") else ""
        verb = "rolled back: " if kind == "set_rolled_back" else ""
        return f"  {event.get('set')}: {verb}{event.get('state')}" + (
            f" [rollout {event['rollout']}]" if event.get("rollout") else "") + extra
    if kind == "sets_started":
        return f"  started: {', '.join(event.get('sets', []))}"
    if kind == "bake_started":
        return f"baking {event['seconds']:.0f}s after stage '{stage}'"
    if kind == "bake_skipped":
        return f"no bake after stage '{stage}': {event.get('reason')}"
    if kind == "fleet_halted":
        return f"fleet halted in stage '{stage}': {event['reason']}"
    if kind == "approval_waiting":
        return (f"waiting for approval of stage '{stage}' "
                + ("before it starts" if event.get("when") == "before" else "after its bake")
                + f": vmssctl fleet approve {event.get('fleet')} (or reject, or the dashboard)")
    if kind == "stage_approved":
        return f"stage '{stage}' approved by {event.get('by')}"
    if kind == "stage_rejected":
        return f"stage '{stage}' rejected by {event.get('by')}: {event.get('reason')}"
    if kind in ("fleet_paused", "fleet_resumed", "fleet_aborted") and event.get("by"):
        return f"{kind.replace('_', ' ')} by {event['by']}"
    return kind.replace("_", " ") if isinstance(kind, str) else str(event)


def _say(output: str, obj: dict, text: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()
    else:
        print(inputs.one_line(text), flush=True)


def _show(output: str, fv: FleetView) -> None:
    """The fleet as `fleet status` shows it (and `fleet run` when it ends): JSON, or the rich view."""
    if output == "json":
        print(json.dumps(fv.to_json(), default=str), flush=True)
        return
    from vmssctl import render

    render.console().print(_rich_view(fv))


def _rich_view(fv: FleetView):
    """The FleetView for a terminal: headline, stages, each set with its state (the fleet's colours) and its
    rollout's progress."""
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    from vmssctl.fleet.view import FLEET_COLOURS, SET_COLOURS, SET_STATES

    def styled(text: str, colours: tuple[str, str]) -> Text:
        return Text(f" {text} ", style=f"{colours[1]} on {colours[0]}")

    title = Text.assemble(("fleet ", "bold"), (inputs.one_line(fv.name or fv.fleet), "bold"), f" {fv.fleet}  ",
                          styled(fv.state, FLEET_COLOURS.get(fv.state, ("#6b7280", "#fff"))),
                          f"  {inputs.one_line(fv.headline())}" if fv.headline() != fv.state else "")
    counts = Text("  ").join(styled(f"{s.replace('_', ' ')} {n}", SET_COLOURS[s])
                             for s, n in fv.counts.items() if n and s in SET_STATES)
    t = Table(box=None, show_header=True, pad_edge=False)
    for col in ("stage", "set", "state", "rollout", "progress"):
        t.add_column(col)
    for n, s in enumerate(fv.stages, 1):
        note = ("approval before; " if s.approve else "") + ("approval after; " if s.approve_after else "")
        t.add_row(Text(f"{n}. {inputs.one_line(s.name)}", style="bold"), "", Text(s.state), "",
                  Text(note + (f"bake {s.bake:.0f}s; " if s.bake else "") + f"{s.concurrency} at a time"
                       + "".join(f"; approved by {inputs.one_line(str(a.get('by')))}" for a in s.approvals)))
        for v in fv.sets:
            if v.stage != s.name:
                continue
            p = v.progress
            prog = (f"batch {p.get('batch_no')}/{p.get('batches_total')}, {p.get('done')}/{p.get('total')} done, "
                    f"healthy {p.get('healthy')}/{p.get('capacity')} (floor {p.get('floor')})"
                    if p and v.state in MOVING else "")
            t.add_row("", escape(fv.label(v)), styled(v.state.replace("_", " "), SET_COLOURS[v.state]),
                      v.rollout or "", Text(inputs.one_line(v.error or prog)[:160]))
    return Group(title, counts, t)


def _list(output: str, fleets: list[FleetView]) -> None:
    if output == "json":  # a line a fleet run, newest first
        for f in fleets:
            print(json.dumps({"type": "fleet_summary", "fleet": f.fleet, "name": f.name, "state": f.state,
                              "headline": f.headline(), "counts": f.counts}))
        return
    from rich.table import Table

    from vmssctl import render

    t = Table(box=None)
    for col in ("fleet", "name", "state", "sets"):
        t.add_column(col)
    for f in fleets:
        t.add_row(f.fleet, inputs.one_line(f.name), inputs.one_line(f.headline()),
                  ", ".join(f"{s.replace('_', ' ')} {n}" for s, n in f.counts.items() if n))
    render.console().print(t if fleets else "no fleets yet")
