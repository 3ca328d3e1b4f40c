"""`vmssctl fleet plan|run|status|pause|resume|abort|rollback`: the fleet file, the scale sets, and DBOS."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace

from vmssctl import inputs
from vmssctl.errors import UsageError, VmssctlError
from vmssctl.fleet.spec import FleetSpec, StagePlan, assign, parse
from vmssctl.fleet.view import RUNNING

EXIT_OK, EXIT_FAILED, EXIT_ABORTED = 0, 1, 3


def cmd_fleet(args: argparse.Namespace) -> int:
    from vmssctl.azure import compute_client, list_set_refs, resolve_connection
    from vmssctl.rollout.journal import Journal

    if args.journal and (args.database or "").startswith("postgresql://") and \
            not args.journal.startswith("postgresql://"):
        raise UsageError("with --database postgresql://…, the sets' rollouts are journaled in that database (workers "
                         "on any machine share it): leave --journal out")
    conn = resolve_connection(args.emulator, args.endpoint, args.ca, args.subscription)
    journal = Journal(args.journal or (args.database if (args.database or "").startswith("postgresql://") else None))
    database = args.database or _default_database(journal.location)
    if args.fleet_command in ("status", "abort", "pause", "resume", "rollback"):
        return _existing(args, conn, journal, database)
    text = inputs.read_small_file(args.file, "FILE")
    spec = parse(text, args.file)
    clients = {sub: compute_client(replace(conn, subscription=sub))
               for sub in (spec.subscriptions or (conn.subscription,))}
    plans = assign(spec, [r for sub, client in clients.items() for r in list_set_refs(client, sub)])
    if args.fleet_command == "plan":
        _print_plan(args.output, spec, plans, _estimates(clients, journal, conn, spec, plans))
        return EXIT_OK
    from vmssctl import durable
    from vmssctl.fleet import run

    sets = sum(len(p.sets) for p in plans)
    if database.startswith("postgresql://"):  # hand it to the workers sharing the database, and watch
        fid = run.hand_to_workers(database, text, plans, conn.to_json(), _journal_input(journal, database))
        _say(args.output, {"type": "fleet", "fleet": fid, "database": "postgresql", "workers": True},
             f"fleet {fid}: {sets} scale set(s) in {len(plans)} stage(s), handed to the workers")
        client = durable.client(database)
        try:
            for event in client.read_stream(fid, run.EVENTS):
                _say(args.output, event, _line(event))
            outcome = client.retrieve_workflow(fid).get_result()
        finally:
            client.destroy()
    else:
        run.launch(database)
        try:
            fid = run.start(text, plans, conn.to_json(), _journal_input(journal, database))
            _say(args.output, {"type": "fleet", "fleet": fid, "database": database.split("://")[0]},
                 f"fleet {fid}: {sets} scale set(s) in {len(plans)} stage(s)")
            for event in run.events(fid):
                _say(args.output, event, _line(event))
            outcome = run.result(fid)
        finally:
            durable.shutdown()
    return {"succeeded": EXIT_OK, "aborted": EXIT_ABORTED}.get(outcome["state"], EXIT_FAILED)


def _existing(args: argparse.Namespace, conn, journal, database: str) -> int:
    """status and abort read and steer through a DBOS client (nothing runs here); rollback runs here."""
    from vmssctl import durable
    from vmssctl.fleet import run

    fid = inputs.text(args.id, "fleet id", 64)
    c = durable.client(database)
    try:
        found = c.list_workflows(workflow_ids=[fid], load_input=True)
        if not found:
            raise UsageError(f"no fleet '{fid}' in {database.split('://')[0]} database {database.split('://')[-1]}")
        status = found[0]
        if args.fleet_command == "status":
            for event in run.snapshot(c, fid):
                _say(args.output, event, _line(event))
            _say(args.output, {"type": "fleet_status", "fleet": fid, "status": status.status},
                 f"fleet {fid}: {status.status.lower()}")
            return EXIT_OK
        if args.fleet_command in ("abort", "pause", "resume"):
            op = args.fleet_command
            if status.status not in RUNNING:
                raise UsageError(f"fleet {fid} is {status.status.lower()}: there is nothing to {op}")
            c.send(fid, op, topic="control")
            asked = _steer_sets(journal, conn, run.plan_of(status), op)
            what = {"abort": "no set starts from now on", "pause": "no set starts until 'fleet resume'",
                    "resume": "sets start again"}[op]
            _say(args.output, {"type": f"fleet_{op}_requested", "fleet": fid, "rollouts": asked},
                 f"fleet {fid}: {what}; asked {len(asked)} rollout(s) in flight to {op}")
            return EXIT_OK
        if status.status in RUNNING:
            raise UsageError(f"fleet {fid} is still running: abort it first ('vmssctl fleet abort {fid}')")
    finally:
        c.destroy()
    run.launch(database)
    try:
        outcome = run.rollback(fid, conn.to_json(), _journal_input(journal, database))
        for event in run.events(f"{fid}-rollback"):
            _say(args.output, event, _line(event))
        return EXIT_OK if all(s["code"] == 0 for s in outcome["sets"]) else EXIT_FAILED
    finally:
        durable.shutdown()


def _steer_sets(journal, conn, plan: list[dict], op: str) -> list[str]:
    """Ask the rollouts of the fleet's sets that are running now to abort, pause or resume (through the journal,
    as `vmssctl rollout abort|pause|resume` does): they act at their next turn."""
    from vmssctl.rollout import claim
    from vmssctl.rollout.journal import scale_set_key

    out = []
    for stage in plan:
        for key in stage.get("sets", []):
            rg, name = key.split("/", 1)
            r = journal.active_for(scale_set_key(stage.get("subs", {}).get(key) or conn.subscription, rg, name))
            if r is not None and claim.running(journal, r):
                journal.request(r.id, op)
                out.append(r.id)
    return out


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

    out = {}
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


def _print_plan(output: str, spec: FleetSpec, plans: list[StagePlan], est: dict[str, dict]) -> None:
    total = 0.0
    stages = []
    for p in plans:
        longest = max((est[r.key].get("seconds", 0.0) for r in p.sets), default=0.0)
        waves = math.ceil(len(p.sets) / p.stage.concurrency) if p.sets else 0
        seconds = waves * longest + (p.stage.bake if p is not plans[-1] else 0.0)
        total += seconds
        stages.append({"stage": p.stage.name, "concurrency": p.stage.concurrency, "bake": p.stage.bake,
                       "seconds": seconds, "sets": [{"set": r.key, **est[r.key]} for r in p.sets]})
    if output == "json":
        print(json.dumps({"type": "fleet_plan", "name": spec.name, "stages": stages, "seconds": total}))
        return
    print(f"Fleet plan '{spec.name}': {sum(len(p.sets) for p in plans)} scale set(s), {len(plans)} stage(s), "
          f"estimate ~{total / 60:.0f} min")
    for n, s in enumerate(stages, 1):
        print(f"  {n}. {s['stage']}: {len(s['sets'])} set(s), {s['concurrency']} at a time"
              + (f", then bake {s['bake']:.0f}s" if s["bake"] else "") + f" (~{s['seconds'] / 60:.0f} min)")
        for item in s["sets"]:
            what = (f"refused: {item['refused']}" if "refused" in item else
                    f"{item['instances']} instance(s) in {item['batches']} batch(es)")
            print(f"       {item['set']}: {what}")
    if spec.max_failed_percent is not None:
        print(f"  halt: when more than {spec.max_failed_percent:g} % of the sets started so far failed")
    else:
        print(f"  halt: when more than {spec.max_failed} set(s) failed")


def _line(event: dict) -> str:
    kind = event.get("type")
    if kind == "stage_started":
        return f"stage {event['number']} '{event['stage']}': {', '.join(event['sets'])}"
    if kind == "set_finished":
        extra = f" ({event['error']})" if event.get("error") else ""
        return f"  {event['set']}: {event['state']}" + (f" [rollout {event['rollout']}]" if event.get("rollout")
                                                         else "") + extra
    if kind == "bake_started":
        return f"baking {event['seconds']:.0f}s after stage '{event['stage']}'"
    if kind == "fleet_halted":
        return f"fleet halted in stage '{event['stage']}': {event['reason']}"
    return kind.replace("_", " ") if isinstance(kind, str) else str(event)


def _say(output: str, obj: dict, text: str) -> None:
    if output == "json":
        sys.stdout.write(json.dumps(obj, default=str) + "\n")
        sys.stdout.flush()
    else:
        print(text, flush=True)
