"""The dashboard web app: pages, live updates (server-sent events), operations, rollouts.

Security: it listens on 127.0.0.1; a browser gets in through the one-time login link printed at
start (exchanged for an HttpOnly, SameSite=Strict session cookie; the link then stops working),
scripts with the API token (``--token-file``) as a bearer, which can also mint a new login link;
state-changing requests also need the session's CSRF token in ``X-CSRF-Token``; the Host
header must name this server (DNS rebinding). So neither another user on the machine nor
a web page in the operator's browser can act through it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import secrets
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from vmssctl import inputs
from vmssctl.azure import Connection, Operation, ScaleSetApi, list_scale_sets
from vmssctl.dashboard import html
from vmssctl.dashboard.watch import Watchers
from vmssctl.errors import ArmError, UsageError, VmssctlError
from vmssctl.policy import load as load_policy
from vmssctl.rollout.journal import Journal, scale_set_key
from vmssctl.rollout.progress import Progress
from vmssctl.target import ImageChange

COOKIE = "vmssctl_session"


@dataclass
class Dashboard:
    conn: Connection
    client: object
    journal_path: str | None = None
    interval: float = 5.0
    port: int = 0
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    sessions: dict[str, str] = field(default_factory=dict)  # session id -> CSRF token
    login_codes: set[str] = field(default_factory=set)  # one-time codes of login links not used yet
    notices: list[dict] = field(default_factory=list)
    fleet_database: str | None = None  # DBOS's database of the fleets (default: beside the journal)

    def __post_init__(self) -> None:
        self.watchers = Watchers(self._fetcher, self.interval)
        self._local = threading.local()
        self.notice_seq = 0

    # ------------------------------------------------------------------ plumbing
    def api(self, rg: str, name: str) -> ScaleSetApi:
        return ScaleSetApi(self.client, rg, name)

    def _fetcher(self, rg: str, name: str):
        api = self.api(rg, name)
        return lambda: (api.get(), api.instances())

    def journal(self) -> Journal:
        """One SQLite connection per thread (the engine runs in its own)."""
        j = getattr(self._local, "journal", None)
        if j is None:
            j = self._local.journal = Journal(self.journal_path)
        return j

    def notice(self, rg: str, name: str, text: str, ok: bool) -> None:
        self.notice_seq += 1
        self.notices.append({"seq": self.notice_seq, "rg": rg.lower(), "name": name.lower(), "text": text, "ok": ok})
        del self.notices[:-200]

    # ------------------------------------------------------------------ security
    def allowed_host(self, request: Request) -> bool:
        host = request.headers.get("host", "")
        return host in (f"127.0.0.1:{self.port}", f"localhost:{self.port}")

    def session(self, request: Request) -> str | None:
        sid = request.cookies.get(COOKIE)
        if sid and sid in self.sessions:
            return sid
        return None

    def bearer_ok(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        return auth.lower().startswith("bearer ") and hmac.compare_digest(auth[7:].strip(), self.token)

    def login_link(self) -> str:
        """A login URL that works once: a leaked link (history, screen share) is dead after its first use."""
        code = secrets.token_urlsafe(24)
        self.login_codes.add(code)
        return f"http://127.0.0.1:{self.port}/?token={code}"

    def use_login_code(self, code: str) -> bool:
        for known in list(self.login_codes):
            if hmac.compare_digest(known, code):
                self.login_codes.discard(known)
                return True
        return False

    def new_session(self) -> str:
        sid = secrets.token_urlsafe(24)
        self.sessions[sid] = secrets.token_urlsafe(24)
        return sid


def _guard(write: bool = False):
    """Host check, authentication, and for writes the CSRF token and Origin."""
    def wrap(fn):
        async def endpoint(request: Request) -> Response:
            d: Dashboard = request.app.state.dash
            if not d.allowed_host(request):
                return PlainTextResponse("unexpected Host header", 400)
            sid = d.session(request)
            token = request.query_params.get("token")
            if sid is None and token and request.method == "GET" and d.use_login_code(token):
                sid = d.new_session()
                target = request.url.path + (f"?rg={quote(request.query_params['rg'])}"
                                             if request.query_params.get("rg") else "")
                resp = RedirectResponse(target, 303)
                resp.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/")
                return resp
            if sid is None and not d.bearer_ok(request):
                return PlainTextResponse("not logged in: open the login link vmssctl dashboard printed (each link "
                                         "works once; GET /login with the API token mints another)", 401)
            if write:
                origin = request.headers.get("origin")
                if origin and origin not in (f"http://127.0.0.1:{d.port}", f"http://localhost:{d.port}"):
                    return PlainTextResponse("cross-origin request refused", 403)
                if sid is not None and not hmac.compare_digest(request.headers.get("x-csrf-token", ""),
                                                               d.sessions[sid]):
                    return PlainTextResponse("missing or wrong CSRF token", 403)
            request.state.sid = sid
            return await fn(request, d)
        return endpoint
    return wrap


# ---------------------------------------------------------------------- pages
async def _sets(d: Dashboard) -> tuple[list[tuple[str, str, str]], str | None]:
    """Every scale set, or none and why not (ARM unreachable): the page shows the reason as a banner."""
    try:
        return await run_in_threadpool(list_scale_sets, d.client), None
    except VmssctlError as e:
        return [], str(e)[:300]


def _csrf(d: Dashboard, request: Request) -> str:
    return d.sessions.get(request.state.sid or "", "")


@_guard()
async def index(request: Request, d: Dashboard) -> Response:
    sets, error = await _sets(d)
    if len(sets) == 1 and not request.query_params.get("rg"):
        return RedirectResponse(f"/sets/{quote(sets[0][0])}/{quote(sets[0][1])}", 303)
    body = (f'<main class="layout"><nav class="side">{html.picker(sets, None, request.query_params.get("rg", ""))}'
            f'</nav><section class="content">{html.banner(error)}<p>Pick a scale set.</p></section></main>')
    return HTMLResponse(html.page("vmssctl dashboard", _csrf(d, request), body))


def _panel(d: Dashboard, rg: str, name: str) -> str:
    """The rollout panel from the journal: the engine's own Progress, whichever process runs it."""
    j = d.journal()
    key = scale_set_key(d.conn.subscription, rg, name)
    active = j.active_for(key)
    if active is None:
        recent = [r for r in j.list(20) if r.scale_set == key]
        active = recent[0] if recent else None
    if active is None:
        return html.rollout_panel(None, None, [])
    progress = Progress.from_json(active.progress) if active.progress else None
    return html.rollout_panel(active, progress, j.events(active.id), j.batches(active.id))


def _history(d: Dashboard, rg: str, name: str) -> str:
    key = scale_set_key(d.conn.subscription, rg, name)
    return html.history([r for r in d.journal().list(50) if r.scale_set == key])


@_guard()
async def set_page(request: Request, d: Dashboard) -> Response:
    rg, name = request.path_params["rg"], request.path_params["name"]
    view = await d.watchers.get(rg, name).refresh()
    sets, error = await _sets(d)
    body = html.set_page(view.scale_set, view.instances, view.error,
                         html.banner(error) + html.picker(sets, (rg.lower(), name.lower()), ""), _panel(d, rg, name),
                         _history(d, rg, name))
    status = 404 if view.scale_set is None else 200
    return HTMLResponse(html.page(f"{rg}/{name} - vmssctl", _csrf(d, request), body, (rg, name)), status)


def _fleet_client(d: Dashboard):
    from vmssctl.durable import client, default_database

    return client(d.fleet_database or default_database(d.journal().location))


def _fleets(d: Dashboard) -> tuple[list[tuple[str, str, str]], str | None]:
    import datetime as dt

    from vmssctl.fleet.view import RUNNING

    try:
        c = _fleet_client(d)
    except VmssctlError as e:
        return [], str(e)
    try:
        found = c.list_workflows(name="fleet_workflow", sort_desc=True, limit=50, load_input=False)
        return [(w.workflow_id, (w.output or {}).get("state", w.status) if isinstance(w.output, dict) else
                 "running" if w.status in RUNNING else w.status.lower(),
                 dt.datetime.fromtimestamp((w.created_at or 0) / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))
                for w in found], None
    finally:
        c.destroy()


@_guard()
async def fleets_page(request: Request, d: Dashboard) -> Response:
    fleets, error = await run_in_threadpool(_fleets, d)
    body = (f'<main class="layout"><nav class="side"><h3>Fleets</h3>{html.fleet_list(fleets, error)}</nav>'
            '<section class="content"><p>Pick a fleet (vmssctl fleet run FILE starts one).</p></section></main>')
    return HTMLResponse(html.page("fleets - vmssctl", _csrf(d, request), body))


def _fleet_view(d: Dashboard, fid: str):
    from vmssctl.fleet.run import plan_of, snapshot
    from vmssctl.fleet.view import view

    c = _fleet_client(d)
    try:
        found = c.list_workflows(workflow_ids=[fid], load_input=True, load_output=False)
        if not found:
            return None
        events = snapshot(c, fid)
        rollback = snapshot(c, f"{fid}-rollback") if c.list_workflows(workflow_ids=[f"{fid}-rollback"]) else []
        return view(fid, plan_of(found[0]), events + rollback, found[0].status)
    finally:
        c.destroy()


@_guard()
async def fleet_page(request: Request, d: Dashboard) -> Response:
    fid = request.path_params["fid"][:64]
    try:
        fv = await run_in_threadpool(_fleet_view, d, fid)
    except VmssctlError as e:
        fv, error = None, str(e)
    else:
        error = None if fv is not None else f"no fleet '{fid}'"
    fleets, _ = await run_in_threadpool(_fleets, d)
    content = html.fleet_page(fv) if fv is not None else f'<p class="error">{html.e(error or "")}</p>'
    body = (f'<main class="layout"><nav class="side"><h3>Fleets</h3>{html.fleet_list(fleets, None)}</nav>'
            f'<section class="content">{content}</section></main>')
    page = html.page(f"fleet {fid} - vmssctl", _csrf(d, request), body)
    if fv is not None and fv.state in ("running", "paused"):  # live: the page reloads itself while it runs
        page = page.replace("<head>", '<head><meta http-equiv="refresh" content="2">', 1)
    return HTMLResponse(page, 200 if fv is not None else 404)


@_guard()
async def grid_fragment(request: Request, d: Dashboard) -> Response:
    view = await d.watchers.get(request.path_params["rg"], request.path_params["name"]).refresh()
    return HTMLResponse(html.grid(view.scale_set, view.instances, view.error))


@_guard()
async def state_json(request: Request, d: Dashboard) -> Response:
    view = await d.watchers.get(request.path_params["rg"], request.path_params["name"]).refresh()
    return JSONResponse({"scaleSet": view.scale_set.to_json() if view.scale_set else None,
                         "instances": [i.to_json() for i in view.instances], "error": view.error})


@_guard()
async def events(request: Request, d: Dashboard) -> Response:
    """Server-sent events: the grid, the rollout panel and operation results, as they change."""
    rg, name = request.path_params["rg"], request.path_params["name"]
    watcher = d.watchers.get(rg, name)

    async def stream():
        watcher.subscribe()
        version, notice_seq, last_panel, last_summary = -1, d.notice_seq, None, None
        try:
            while not await request.is_disconnected():
                view = watcher.view if watcher.view and watcher.view.version > version else \
                    await watcher.wait_newer(version, timeout=1.0)
                if view is not None and view.version > version:
                    version = view.version
                    yield _sse("grid", html.grid(view.scale_set, view.instances, view.error))
                    summary = html.summary(view.scale_set)
                    if summary != last_summary:
                        last_summary = summary
                        yield _sse("summary", summary)
                panel, hist = await run_in_threadpool(lambda: (_panel(d, rg, name), _history(d, rg, name)))
                if (panel, hist) != last_panel:
                    if last_panel is not None and 'data-state="running"' in panel:
                        watcher.poke()  # the engine has seen something new: the grid follows (at most 1/s)
                    last_panel = (panel, hist)
                    yield _sse("rollout", panel)
                    yield _sse("history", hist)
                for n in [n for n in d.notices if n["seq"] > notice_seq and (n["rg"], n["name"]) ==
                          (rg.lower(), name.lower())]:
                    yield _sse("notice", json.dumps(n))
                notice_seq = d.notice_seq
        finally:
            watcher.unsubscribe()

    from starlette.responses import StreamingResponse

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _sse(kind: str, data: str) -> str:
    return f"event: {kind}\n" + "".join(f"data: {line}\n" for line in data.splitlines() or [""]) + "\n"


# ---------------------------------------------------------------------- operations
async def _body(request: Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise UsageError("request body is not JSON") from None
    if not isinstance(body, dict):
        raise UsageError("request body must be a JSON object")
    return body


def _when_done(d: Dashboard, rg: str, name: str, wait: Callable[[], tuple[str, bool]]) -> None:
    """Run ``wait`` in the background; its (text, ok) becomes a notice on the set's page, which then refreshes."""
    def run() -> None:
        d.notice(rg, name, *wait())
        d.watchers.get(rg, name).poke()
    threading.Thread(target=run, daemon=True).start()


def _track(d: Dashboard, rg: str, name: str, operation: Operation) -> None:
    """Wait for an LRO in the background and report ARM's verdict as a notice."""
    def wait() -> tuple[str, bool]:
        try:
            operation.wait()
            return f"{operation.what}: Succeeded", True
        except VmssctlError as e:
            return f"{operation.what}: Failed {e}", False
    _when_done(d, rg, name, wait)


def _op(fn):
    @_guard(write=True)
    async def endpoint(request: Request, d: Dashboard) -> Response:
        rg, name = request.path_params["rg"], request.path_params["name"]
        try:
            body = await _body(request)
            message = await run_in_threadpool(fn, d, rg, name, body)
        except UsageError as e:
            return JSONResponse({"ok": False, "message": form_words(str(e))}, 400)
        except ArmError as e:
            return JSONResponse({"ok": False, "message": str(e)}, e.status if e.status and e.status >= 400 else 502)
        d.watchers.get(rg, name).poke()
        return JSONResponse({"ok": True, "message": message})
    return endpoint


def _ids(body: dict, d: Dashboard, rg: str, name: str) -> list[str] | None:
    view = d.watchers.get(rg, name).view
    instances = view.instances if view else d.api(rg, name).instances()
    for key in ("fault_domain", "update_domain"):
        if body.get(key) is not None:
            inputs.count(body[key], key.replace("_", " "), 0, 19)
    if body.get("fault_domain") is not None:
        return [i.instance_id for i in instances if str(i.fault_domain) == str(body["fault_domain"])]
    if body.get("update_domain") is not None:
        return [i.instance_id for i in instances if str(i.update_domain) == str(body["update_domain"])]
    ids = body.get("instance_ids")
    if ids is None:
        return None
    return list(inputs.instance_ids(ids if isinstance(ids, list) else str(ids), "instance_ids"))


@_op
def do_action(d: Dashboard, rg: str, name: str, body: dict) -> str:
    action = body.get("action")
    if action not in ScaleSetApi.ACTIONS:
        raise UsageError(f"unknown action '{action}'")
    ids = _ids(body, d, rg, name)
    if ids == []:
        raise UsageError("the selection is empty")
    operation = d.api(rg, name).act(action, ids)
    _track(d, rg, name, operation)
    return f"{operation.what}: accepted by ARM"


@_op
def do_scale(d: Dashboard, rg: str, name: str, body: dict) -> str:
    capacity = inputs.count(body.get("capacity"), "capacity", 0, inputs.MAX_INSTANCES)
    _track(d, rg, name, d.api(rg, name).resize(capacity=capacity))
    return f"scale to {capacity}: accepted by ARM"


def _change(body: dict) -> ImageChange:
    def get(k: str) -> str | None:
        """A form field as typed (the page trims it): empty means 'keep'; anything but text is refused."""
        v = body.get(k)
        if v is None or v == "":
            return None
        if not isinstance(v, str):
            raise UsageError(f"{k} must be text")
        return v
    return ImageChange(sku=get("sku"), version=get("version"), image_id=get("image_id"),
                       custom_uri=get("custom_uri"))


@_op
def do_model(d: Dashboard, rg: str, name: str, body: dict) -> str:
    change = _change(body)
    vm_size = inputs.name(body["vm_size"], "VM size") if body.get("vm_size") else None
    if change.empty and not vm_size:
        raise UsageError("nothing to change: give an image field or a VM size")
    api = d.api(rg, name)
    parts = []
    if not change.empty:
        ss = api.get()
        target = change.apply(ss.image)
        api.update(ss.etag, image=target)
        parts.append(f"image -> {target}")
    if vm_size:
        _track(d, rg, name, api.resize(vm_size=vm_size))
        parts.append(f"VM size -> {vm_size}")
    return "model update accepted: " + "; ".join(parts)


# The rollout form's fields, by the CLI flag each one stands for (messages name the field, not the flag).
FORM_FIELDS = {"--by": "by", "--batch-size": "batch size", "--batch-percent": "batch %", "--canary": "canary",
               "--pause": "pause", "--max-unavailable": "max unavailable", "--rollback": "rollback",
               "--health-timeout": "health timeout", "--max-unhealthy-upgraded": "max unhealthy upgraded",
               "--no-health-signal": "no health signal", "--version": "version", "--sku": "SKU",
               "--image-id": "image id", "--custom-uri": "custom URI", "--strategy": "strategy",
               "--max-surge": "max surge", "--allow-automatic": "allow automatic"}


def form_words(message: str) -> str:
    """A CLI-worded message in the form's words: '--batch-size' becomes the 'batch size' field."""
    for flag in sorted(FORM_FIELDS, key=len, reverse=True):
        message = message.replace(flag, f"the '{FORM_FIELDS[flag]}' field")
    return message


def _prepare_rollout(d: Dashboard, rg: str, name: str, body: dict):
    from vmssctl.upgrade import prepare

    keys = ("by", "batch_size", "batch_percent", "canary", "pause", "max_unavailable", "rollback", "health_timeout",
            "max_unhealthy_upgraded", "strategy", "max_surge")
    overrides: dict = {k: body[k] for k in keys if body.get(k) not in (None, "")}
    for flag in ("no_health_signal", "allow_automatic"):
        if body.get(flag) in (True, "on", "true"):
            overrides[flag] = True
    policy = load_policy(None, overrides)
    api = d.api(rg, name)
    return api, prepare(api, d.journal(), d.conn, _change(body), policy)


@_op
def do_plan(d: Dashboard, rg: str, name: str, body: dict) -> str:
    """The plan the CLI would show, for the confirmation before a rollout starts: changes nothing."""
    from rich.text import Text

    from vmssctl.render import plan_lines

    _, prepared = _prepare_rollout(d, rg, name, body)
    if prepared.plan.pending == 0 and not prepared.diff and prepared.resume is None:
        return "nothing to do: every instance already runs the latest model"
    return "\n".join(Text.from_markup(line).plain for line in plan_lines(prepared))


@_op
def do_rollout(d: Dashboard, rg: str, name: str, body: dict) -> str:
    from vmssctl.upgrade import begin

    api, prepared = _prepare_rollout(d, rg, name, body)
    if prepared.plan.pending == 0 and not prepared.diff and prepared.resume is None:
        return "nothing to do: every instance already runs the latest model"
    rollout = begin(d.journal(), d.conn, api, prepared)
    _run_apart(d, rollout.id, "resume", rg, name)
    return f"rollout {rollout.id} started: {len(prepared.plan.batches)} batch(es)"


@_guard(write=True)
async def rollout_control(request: Request, d: Dashboard) -> Response:
    from vmssctl.upgrade import steer

    rid, op = request.path_params["rid"], request.path_params["op"]
    j = d.journal()
    try:
        r = j.get(rid)
    except UsageError as e:
        return JSONResponse({"ok": False, "message": str(e)}, 404)
    try:
        done = steer(j, r, op)
    except UsageError as e:
        return JSONResponse({"ok": False, "message": str(e)}, 400)
    if done is not None:
        return JSONResponse({"ok": True, "message": done[1]})
    _run_apart(d, rid, op, r.resource_group, r.name)
    return JSONResponse({"ok": True, "message": f"{op} of rollout {rid} started"})


def _run_apart(d: Dashboard, rid: str, op: str, rg: str, name: str) -> None:
    """Run the rollout as `vmssctl rollout resume|rollback RID` in a process of its own: a DBOS workflow like any
    lone upgrade's (the dashboard's process can hold one workflow database, a set's rollout needs its own), which
    a restart of the dashboard does not stop. It connects as the journal records; its end is a notice here."""
    args = [sys.executable, "-m", "vmssctl", "rollout", op, rid, "-o", "json"]
    # the journal through the environment, not argv: a database URL may carry a password, and argv is public (ps)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={**os.environ, "VMSSCTL_JOURNAL": d.journal().location})

    def wait() -> tuple[str, bool]:
        _, err = proc.communicate()
        why = err.strip().splitlines()[-1] if err.strip() else ""
        return f"rollout {rid} ended with exit code {proc.returncode}" + (f": {why}" if why else ""), \
            proc.returncode == 0
    _when_done(d, rg, name, wait)


@_guard()
async def login_link(request: Request, d: Dashboard) -> Response:
    """A fresh one-time login link, for a second browser (needs the API token or a session)."""
    return JSONResponse({"url": d.login_link()})


@_guard()
async def rollouts_json(request: Request, d: Dashboard) -> Response:
    return JSONResponse([r.to_json() for r in d.journal().list(50)])


STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


@_guard()
async def static_file(request: Request, d: Dashboard) -> Response:
    """The page's own JS and CSS, shipped in the package (no CDN, works offline)."""
    name = request.path_params["file"]
    if name not in STATIC_TYPES:
        return PlainTextResponse("not found", 404)
    body = (resources.files("vmssctl.dashboard") / "static" / name).read_bytes()
    return Response(body, media_type=STATIC_TYPES[name], headers={"Cache-Control": "no-cache"})


def build_app(d: Dashboard) -> Starlette:
    app = Starlette(routes=[
        Route("/", index),
        Route("/sets/{rg}/{name}", set_page),
        Route("/sets/{rg}/{name}/grid", grid_fragment),
        Route("/sets/{rg}/{name}/state", state_json),
        Route("/sets/{rg}/{name}/events", events),
        Route("/sets/{rg}/{name}/action", do_action, methods=["POST"]),
        Route("/sets/{rg}/{name}/scale", do_scale, methods=["POST"]),
        Route("/sets/{rg}/{name}/model", do_model, methods=["POST"]),
        Route("/sets/{rg}/{name}/rollout", do_rollout, methods=["POST"]),
        Route("/sets/{rg}/{name}/plan", do_plan, methods=["POST"]),
        Route("/rollouts", rollouts_json),
        Route("/fleets", fleets_page),
        Route("/fleets/{fid}", fleet_page),
        Route("/login", login_link),
        Route("/rollouts/{rid}/{op}", rollout_control, methods=["POST"]),
        Route("/static/{file}", static_file),
    ])
    app.state.dash = d
    return app


async def serve(d: Dashboard, sock) -> None:
    import uvicorn

    config = uvicorn.Config(build_app(d), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1)
    await uvicorn.Server(config).serve(sockets=[sock])


def run_forever(d: Dashboard, sock) -> None:
    asyncio.run(serve(d, sock))

