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
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from vmssctl import inputs
from vmssctl.azure import Connection, Operation, ScaleSetApi, compute_client, list_set_models, list_subscriptions
from vmssctl.dashboard import html
from vmssctl.dashboard.security import COOKIE, Security
from vmssctl.dashboard.watch import Balancing, Watchers
from vmssctl.errors import ArmError, UsageError, VmssctlError
from vmssctl.fleet.view import LIVE
from vmssctl.model import ScaleSet
from vmssctl.policy import load as load_policy
from vmssctl.rollout.journal import Journal, scale_set_key
from vmssctl.rollout.progress import Progress
from vmssctl.target import ImageChange

BALANCING_EVERY = 30.0  # seconds between two reads of a watched set's load balancers (its instances: each poll)
FLEET_DB_WAIT = 2.0  # seconds a page waits for an unreachable fleet database before it says so (it reloads)


@dataclass(frozen=True)
class SetId:
    """A scale set's identity on the dashboard (its URLs, watchers, notices): subscription, group and name."""

    sub: str
    rg: str
    name: str

    @property
    def key(self) -> str:
        return f"{self.sub}/{self.rg}/{self.name}".lower()

    @property
    def path(self) -> str:
        return f"/sets/{quote(self.sub)}/{quote(self.rg)}/{quote(self.name)}"


def _set_id(request: Request) -> SetId:
    p = request.path_params
    return SetId(str(p["sub"]), p["rg"], p["name"])


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
    index_reads: asyncio.Future | None = None  # the index's background reads of the sets' instances

    def __post_init__(self) -> None:
        self.watchers = Watchers(self._fetcher, self.interval)
        self._local = threading.local()
        self.notice_seq = 0
        self._clients: dict[str, object] = {self.conn.subscription.lower(): self.client}
        self._subs: tuple[float, list[tuple[str, str]]] | None = None
        self._clients_lock = threading.Lock()

    # ------------------------------------------------------------------ plumbing
    def client_for(self, sub: str):
        """The SDK client of subscription ``sub`` (made on first use: the same credential, endpoint and CA)."""

        with self._clients_lock:
            c = self._clients.get(sub.lower())
            if c is None:
                c = self._clients[sub.lower()] = compute_client(replace(self.conn, subscription=sub))
            return c

    def subscriptions(self) -> list[tuple[str, str]]:
        """(id, display name) of every subscription the connection knows, its own first; listed once a minute.
        ARM unreachable raises (the page says so); a listing refused (no permission at tenant scope) is the
        connection's own subscription."""
        import time

        from vmssctl.errors import Unreachable

        if self._subs is None or time.monotonic() - self._subs[0] > 60:
            try:
                self._subs = (time.monotonic(), list_subscriptions(self.conn))
            except Unreachable:
                raise
            except VmssctlError:
                self._subs = (time.monotonic(), [(self.conn.subscription, self.conn.subscription)])
        return self._subs[1]

    def subscription_names(self) -> dict[str, str]:
        """The subscriptions' display names as last listed (nothing is asked of ARM here)."""
        return dict(self._subs[1]) if self._subs else {self.conn.subscription: self.conn.subscription}

    def api(self, sub: str, rg: str, name: str) -> ScaleSetApi:
        return ScaleSetApi(self.client_for(sub), rg, name)

    def _fetcher(self, sub: str, rg: str, name: str):
        """The set, its instances, and (at most every BALANCING_EVERY seconds, kept between) what its load
        balancers say: one poller's reads, shared by every tab."""
        api = self.api(sub, rg, name)
        last: list = [None, 0.0]  # the balancing last read, and when

        def fetch():
            ss = api.get()
            if ss.fronted and time.monotonic() - last[1] >= BALANCING_EVERY:
                network = api.network()
                try:
                    last[0] = Balancing(network.backends(ss)) if network is not None else None
                except VmssctlError as e:  # (no permission, say): the set is still shown, with why not
                    last[0] = Balancing([], f"cannot read its load balancers: {e}")
                last[1] = time.monotonic()
            return ss, api.instances(), last[0] if ss.fronted else None
        return fetch

    def journal(self) -> Journal:
        """One SQLite connection per thread (the engine runs in its own)."""
        j = getattr(self._local, "journal", None)
        if j is None:
            j = self._local.journal = Journal(self.journal_path)
        return j

    def notice(self, sid: SetId, text: str, ok: bool) -> None:
        self.notice_seq += 1
        self.notices.append({"seq": self.notice_seq, "set": sid.key, "text": text, "ok": ok})
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


def _dash(request: Request) -> Dashboard:
    """The dashboard a request is for (the Security middleware has let the request through already)."""
    return request.app.state.dash


# ---------------------------------------------------------------------- pages
async def _sets(d: Dashboard) -> tuple[list[tuple[str, str, str, str]], str | None]:
    """Every scale set of every subscription the connection knows, as (subscription, group, name, location), or
    none and why not (ARM unreachable): the page shows the reason as a banner."""
    listed, error = await _set_models(d)
    return [(sub, ref.resource_group, ref.name, ref.location) for sub, ref, _ in listed], error


async def _set_models(d: Dashboard) -> tuple[list[tuple[str, Any, ScaleSet | None]], str | None]:
    """Every scale set of every subscription, with its model, from one listing a subscription."""
    def listing() -> list[tuple[str, Any, ScaleSet | None]]:
        out = []
        for sub, _ in d.subscriptions():
            out += [(sub, ref, model) for ref, model in list_set_models(d.client_for(sub), sub)]
        return out
    try:
        return await run_in_threadpool(listing), None
    except VmssctlError as e:
        return [], str(e)[:300]


def _csrf(d: Dashboard, request: Request) -> str:
    return d.sessions.get(request.state.sid or "", "")


def _picker(d: Dashboard, sets: list[tuple[str, str, str, str]], current: SetId | None, rg_filter: str) -> str:
    names = d.subscription_names()
    return html.picker(sets, current.key if current else None, rg_filter, names)


INDEX_READS = 8  # sets whose instances are read at once for the index (in the background)


def _rows(d: Dashboard, listed: list[tuple[str, Any, ScaleSet | None]]) -> list[html.SetRow]:
    """The index's rows at once: each set's model from the listing, its instances as its watcher last saw them
    (none yet: the figures follow on a later refresh), its rollout in flight from the journal. Sets seen longer
    ago than the refresh interval are read again in the background, a few at a time: an open index costs ARM
    what the sets' own pages would, and never holds the page."""
    j, stale = d.journal(), []
    rows = []
    for sub, ref, model in listed:
        watcher = d.watchers.get(sub, ref.resource_group, ref.name)
        view = watcher.view
        if view is None or time.monotonic() - view.at >= d.interval:
            stale.append(watcher)
        rows.append(html.SetRow(sub, ref.resource_group, ref.name, ref.location, model,
                                view.instances if view is not None else None, view.error if view else None,
                                j.active_for(scale_set_key(sub, ref.resource_group, ref.name))))
    if stale:
        d.index_reads = asyncio.ensure_future(_read_all(stale, d.index_reads))
    return rows


async def _read_all(watchers: list, previous: asyncio.Future | None) -> None:
    if previous is not None and not previous.done():
        return  # the last round is still reading
    limit = asyncio.Semaphore(INDEX_READS)

    async def one(w) -> None:
        async with limit:
            await w.refresh()
    await asyncio.gather(*(one(w) for w in watchers))


async def index(request: Request) -> Response:
    """Every scale set of every subscription, with its figures and rollout; ``?part=table`` is the table alone,
    which the page fetches again every refresh interval."""
    d = _dash(request)
    listed, error = await _set_models(d)
    part = request.query_params.get("part") == "table"
    if len(listed) == 1 and not part:
        sub, ref, _ = listed[0]
        return RedirectResponse(SetId(sub, ref.resource_group, ref.name).path, 303)
    table = html.set_table(_rows(d, listed), d.subscription_names())
    if part:
        return HTMLResponse(html.banner(error) + table)
    body = (f'<main class="content index" data-refresh="{int(d.interval * 1000)}"><h2>Scale sets</h2>'
            f'<input id="filter" type="search" placeholder="filter: name, group, location, image, state…" '
            f'aria-label="filter the scale sets"><div id="sets">{html.banner(error)}{table}</div></main>')
    return HTMLResponse(html.page("vmssctl dashboard", _csrf(d, request), body))


async def old_set_page(request: Request) -> Response:
    """A set named by group and name alone (an older link): in the connection's own subscription."""
    d = _dash(request)
    return RedirectResponse(SetId(d.conn.subscription, request.path_params["rg"], request.path_params["name"]).path,
                            303)


def _panel(d: Dashboard, sid: SetId) -> str:
    """The rollout panel from the journal: the engine's own Progress, whichever process runs it."""
    j = d.journal()
    key = scale_set_key(sid.sub, sid.rg, sid.name)
    active = j.active_for(key)
    if active is None:
        recent = [r for r in j.recent(20) if r.scale_set == key]
        active = recent[0] if recent else None
    if active is None:
        return html.rollout_panel(None, None, [])
    from vmssctl.rollout import claim
    from vmssctl.upgrade import controls

    progress = Progress.from_json(active.progress) if active.progress else None
    return html.rollout_panel(active, progress, j.events(active.id), j.batches(active.id),
                              controls(active, claim.running(j, active)))


def _history(d: Dashboard, sid: SetId) -> str:
    key = scale_set_key(sid.sub, sid.rg, sid.name)
    return html.history([r for r in d.journal().recent(50) if r.scale_set == key])


async def set_page(request: Request) -> Response:
    d = _dash(request)
    sid = _set_id(request)
    view = await d.watchers.get(sid.sub, sid.rg, sid.name).refresh()
    sets, error = await _sets(d)
    side = html.banner(error) + _picker(d, sets, sid, "")
    if view.scale_set is None:  # no such set (or ARM unreachable): say so, offer nothing to act on
        body = html.missing_set(sid.sub, sid.rg, sid.name, view.error, side)
        return HTMLResponse(html.page(f"{sid.rg}/{sid.name} - vmssctl", _csrf(d, request), body), 404)
    body = html.set_page(view.scale_set, view.instances, view.error, side, _panel(d, sid), _history(d, sid),
                         d.subscription_names().get(sid.sub, sid.sub) if len(d.subscription_names()) > 1 else None,
                         view.balancing)
    return HTMLResponse(html.page(f"{sid.rg}/{sid.name} - vmssctl", _csrf(d, request), body,
                                  (sid.sub, sid.rg, sid.name)))


def _fleet_client(d: Dashboard):
    from vmssctl.durable import client, default_database

    return client(d.fleet_database or default_database(d.journal().location), wait=FLEET_DB_WAIT)


def _fleets(d: Dashboard):
    """The newest fleet runs, each as it stands (one FleetView each), or none and why not."""
    from vmssctl.fleet.run import recent

    try:
        c = _fleet_client(d)
    except VmssctlError as e:
        return [], str(e)
    try:
        return recent(c, d.journal(), 50), None
    except Exception as e:  # the database went away while reading: shown as a banner, retried on the next load
        return [], f"cannot read the fleet database: {str(e).splitlines()[0][:200] if str(e) else e}"
    finally:
        c.destroy()


async def fleets_page(request: Request) -> Response:
    d = _dash(request)
    fleets, error = await run_in_threadpool(_fleets, d)
    body = (f'<main class="layout"><nav class="side"><h3>Fleets</h3>{html.fleet_list(fleets, None)}</nav>'
            f'<section class="content">{html.banner(error, "Cannot read the fleets")}'
            f'{html.fleet_table(fleets)}</section></main>')
    page = html.page("fleets - vmssctl", _csrf(d, request), body, style=html.fleet_style())
    if any(f.state in LIVE for f in fleets) or error:
        page = page.replace("<head>", '<head><meta http-equiv="refresh" content="2">', 1)
    return HTMLResponse(page)


def _fleet_view(d: Dashboard, fid: str):
    from vmssctl.fleet.run import connection_of, load

    c = _fleet_client(d)
    try:
        fv = load(c, fid, d.journal())
        if fv is not None and fv.baking is not None:  # the bake's time left, on the fleet's own clock
            found = c.list_workflows(workflow_ids=[fid], load_input=True, load_output=False)
            fv = load(c, fid, d.journal(), _fleet_now(connection_of(found[0]))) if found else fv
        return fv
    finally:
        c.destroy()


def _fleet_now(stored: dict) -> float | None:
    from vmssctl.azure import connection_from_json
    from vmssctl.rollout.clock import clock_for

    try:
        return clock_for(connection_from_json(stored)).now()
    except VmssctlError:
        return None


async def fleet_page(request: Request) -> Response:
    d = _dash(request)
    fid = request.path_params["fid"][:80]
    error: str | None
    try:
        fv = await run_in_threadpool(_fleet_view, d, fid)
    except VmssctlError as e:
        fv, error = None, str(e)
    except Exception as e:  # the database went away while reading
        fv, error = None, f"cannot read the fleet database: {str(e).splitlines()[0][:200] if str(e) else e}"
    else:
        error = None if fv is not None else f"no fleet '{fid}'"
    fleets, _ = await run_in_threadpool(_fleets, d)
    content = html.fleet_page(fv, len(d.subscription_names()) > 1) if fv is not None else \
        html.banner(error, "Cannot show the fleet")
    body = (f'<main class="layout"><nav class="side"><h3>Fleets</h3>{html.fleet_list(fleets, None)}</nav>'
            f'<section class="content">{content}</section></main>')
    page = html.page(f"fleet {fid} - vmssctl", _csrf(d, request), body, style=html.fleet_style())
    if fv is None or fv.state in LIVE:  # live: the page reloads itself while it runs (or while it cannot be read)
        page = page.replace("<head>", '<head><meta http-equiv="refresh" content="2">', 1)
    return HTMLResponse(page, 200 if fv is not None or "no fleet" not in (error or "") else 404)


async def fleet_decide(request: Request) -> Response:
    """Approve or reject a stage the fleet waits for, from the page's buttons (CSRF-checked), recorded with who
    decided as the dashboard knows it: the user running it, through the dashboard."""
    d = _dash(request)
    fid, op = request.path_params["fid"][:80], request.path_params["op"]
    try:
        body = await _body(request)
        message = await run_in_threadpool(_decide, d, fid, op, body)
    except UsageError as e:
        return JSONResponse({"ok": False, "message": str(e)}, 400)
    return JSONResponse({"ok": True, "message": message})


def _decide(d: Dashboard, fid: str, op: str, body: dict) -> str:
    import getpass
    import socket

    from vmssctl.fleet.run import CONTROL, load

    if op not in ("approve", "reject"):
        raise UsageError(f"unknown fleet operation '{op}'")
    stage = inputs.label(body.get("stage"), "stage", 100)
    reason = inputs.label(body.get("reason"), "reason", 500) if op == "reject" else None
    c = _fleet_client(d)
    try:
        fv = load(c, fid, d.journal())
        if fv is None:
            raise UsageError(f"no fleet '{fid}'")
        if not fv.waiting or fv.waiting["stage"] != stage:
            raise UsageError(f"fleet {fid} is not waiting for an approval of stage '{stage}' ({fv.headline()})")
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "?"
        who = f"{user}@{socket.gethostname()} (dashboard)"
        message = {"op": op, "stage": stage, "when": fv.waiting["when"], "by": who}
        if reason:
            message["reason"] = reason
        c.send(fid, message, topic=CONTROL)
    finally:
        c.destroy()
    return f"stage '{stage}' {'approved' if op == 'approve' else 'rejected'} by {who}"


async def grid_fragment(request: Request) -> Response:
    d = _dash(request)
    sid = _set_id(request)
    view = await d.watchers.get(sid.sub, sid.rg, sid.name).refresh()
    return HTMLResponse(html.grid(view.scale_set, view.instances, view.error))


async def state_json(request: Request) -> Response:
    d = _dash(request)
    sid = _set_id(request)
    view = await d.watchers.get(sid.sub, sid.rg, sid.name).refresh()
    return JSONResponse({"scaleSet": view.scale_set.to_json() if view.scale_set else None,
                         "instances": [i.to_json() for i in view.instances], "error": view.error})


async def events(request: Request) -> Response:
    """Server-sent events: the grid, the rollout panel and operation results, as they change."""
    d = _dash(request)
    sid = _set_id(request)
    watcher = d.watchers.get(sid.sub, sid.rg, sid.name)

    async def stream():
        watcher.subscribe()
        version, notice_seq, sent = -1, d.notice_seq, Sent()
        try:
            while not await request.is_disconnected():
                view = watcher.view if watcher.view and watcher.view.version > version else \
                    await watcher.wait_newer(version, timeout=1.0)
                if view is not None and view.version > version:
                    version = view.version
                    for kind, text in (("grid", html.grid(view.scale_set, view.instances, view.error)),
                                       ("summary", html.summary(view.scale_set, view.balancing))):
                        if sent.new(kind, text):
                            yield _sse(kind, text)
                panel, hist = await run_in_threadpool(lambda: (_panel(d, sid), _history(d, sid)))
                if sent.new("rollout", panel):
                    if sent.seen("history") and 'data-state="running"' in panel:
                        watcher.poke()  # the engine has seen something new: the grid follows (at most 1/s)
                    yield _sse("rollout", panel)
                if sent.new("history", hist):
                    yield _sse("history", hist)
                for n in [n for n in d.notices if n["seq"] > notice_seq and n["set"] == sid.key]:
                    yield _sse("notice", json.dumps(n))
                notice_seq = d.notice_seq
        finally:
            watcher.unsubscribe()

    from starlette.responses import StreamingResponse

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


class Sent:
    """What a tab was last sent of each part: a part is sent again only when it changed (a set where nothing
    happens costs its tabs nothing, however often ARM is read)."""

    def __init__(self) -> None:
        self._last: dict[str, str] = {}

    def new(self, kind: str, text: str) -> bool:
        """Is ``text`` different from what the tab has of ``kind``? (Recorded as sent when it is.)"""
        if self._last.get(kind) == text:
            return False
        self._last[kind] = text
        return True

    def seen(self, kind: str) -> bool:
        return kind in self._last


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


def _when_done(d: Dashboard, sid: SetId, wait: Callable[[], tuple[str, bool]]) -> None:
    """Run ``wait`` in the background; its (text, ok) becomes a notice on the set's page, which then refreshes."""
    def run() -> None:
        d.notice(sid, *wait())
        d.watchers.get(sid.sub, sid.rg, sid.name).poke()
    threading.Thread(target=run, daemon=True).start()


def _track(d: Dashboard, sid: SetId, operation: Operation) -> None:
    """Wait for an LRO in the background and report ARM's verdict as a notice."""
    def wait() -> tuple[str, bool]:
        try:
            operation.wait()
            return f"{operation.what}: Succeeded", True
        except VmssctlError as e:
            return f"{operation.what}: Failed {e}", False
    _when_done(d, sid, wait)


def _op(fn):
    async def endpoint(request: Request) -> Response:
        d, sid = _dash(request), _set_id(request)
        try:
            body = await _body(request)
            message = await run_in_threadpool(fn, d, sid, body)
        except UsageError as e:
            return JSONResponse({"ok": False, "message": form_words(str(e))}, 400)
        except ArmError as e:
            return JSONResponse({"ok": False, "message": str(e)}, e.status if e.status and e.status >= 400 else 502)
        d.watchers.get(sid.sub, sid.rg, sid.name).poke()
        return JSONResponse({"ok": True, **(message if isinstance(message, dict) else {"message": message})})
    return endpoint


def _ids(body: dict, d: Dashboard, sid: SetId) -> list[str] | None:
    view = d.watchers.get(sid.sub, sid.rg, sid.name).view
    instances = view.instances if view else d.api(sid.sub, sid.rg, sid.name).instances()
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
def do_action(d: Dashboard, sid: SetId, body: dict) -> str:
    action = body.get("action")
    if action not in ScaleSetApi.ACTIONS:
        raise UsageError(f"unknown action '{action}'")
    ids = _ids(body, d, sid)
    if ids == []:
        raise UsageError("the selection is empty")
    operation = d.api(sid.sub, sid.rg, sid.name).act(action, ids)
    _track(d, sid, operation)
    return f"{operation.what}: accepted by ARM"


@_op
def do_scale(d: Dashboard, sid: SetId, body: dict) -> str:
    capacity = inputs.count(body.get("capacity"), "capacity", 0, inputs.MAX_INSTANCES)
    _track(d, sid, d.api(sid.sub, sid.rg, sid.name).resize(capacity=capacity))
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
def do_model(d: Dashboard, sid: SetId, body: dict) -> str:
    change = _change(body)
    vm_size = inputs.name(body["vm_size"], "VM size") if body.get("vm_size") else None
    if change.empty and not vm_size:
        raise UsageError("nothing to change: give an image field or a VM size")
    api = d.api(sid.sub, sid.rg, sid.name)
    parts = []
    if not change.empty:
        ss = api.get()
        target = change.apply(ss.image)
        api.update(ss.etag, image=target)
        parts.append(f"image -> {target}")
    if vm_size:
        _track(d, sid, api.resize(vm_size=vm_size))
        parts.append(f"VM size -> {vm_size}")
    return "model update accepted: " + "; ".join(parts)


# The rollout form's fields, by the CLI flag each one stands for (messages name the field, not the flag).
FORM_FIELDS = {"--by": "by", "--batch-size": "batch size", "--batch-percent": "batch %", "--canary": "canary",
               "--pause": "pause", "--max-unavailable": "max unavailable", "--rollback": "rollback",
               "--health-timeout": "health timeout", "--max-unhealthy-upgraded": "max unhealthy upgraded",
               "--no-health-signal": "no health signal", "--version": "version", "--sku": "SKU",
               "--image-id": "image id", "--custom-uri": "custom URI", "--strategy": "strategy",
               "--max-surge": "max surge", "--allow-automatic": "allow automatic", "--drain-timeout": "drain timeout",
               "--drain": "drain", "--bake": "bake (blue-green)"}


NOTHING_TO_DO = "nothing to do: every instance already runs the latest model"


def form_words(message: str) -> str:
    """A CLI-worded message in the form's words: '--batch-size' becomes the 'batch size' field."""
    for flag in sorted(FORM_FIELDS, key=len, reverse=True):
        message = message.replace(flag, f"the '{FORM_FIELDS[flag]}' field")
    return message


def _prepare_rollout(d: Dashboard, sid: SetId, body: dict):
    from vmssctl.upgrade import prepare

    keys = ("by", "batch_size", "batch_percent", "canary", "pause", "max_unavailable", "rollback", "health_timeout",
            "max_unhealthy_upgraded", "strategy", "max_surge", "drain", "drain_timeout", "bake")
    overrides: dict = {k: body[k] for k in keys if body.get(k) not in (None, "")}
    if overrides.get("drain") == "hook":  # a command from a web form would be a shell for whoever holds a session
        raise UsageError("the dashboard runs no commands: a drain hook is set with vmssctl upgrade --drain-hook or "
                         "a policy file")
    for flag in ("no_health_signal", "allow_automatic"):
        if body.get(flag) in (True, "on", "true"):
            overrides[flag] = True
    policy = load_policy(None, overrides)

    api = d.api(sid.sub, sid.rg, sid.name)
    return api, prepare(api, d.journal(), replace(d.conn, subscription=sid.sub), _change(body), policy)


@_op
def do_plan(d: Dashboard, sid: SetId, body: dict) -> dict:
    """The plan the CLI would show, for the confirmation before a rollout starts: changes nothing. ``nothing``
    says there is nothing to start (the page then offers no start)."""
    from rich.text import Text

    from vmssctl.render import plan_lines

    _, prepared = _prepare_rollout(d, sid, body)
    if prepared.nothing_to_do:
        return {"message": NOTHING_TO_DO, "nothing": True}
    return {"message": "\n".join(Text.from_markup(line).plain for line in plan_lines(prepared)), "nothing": False}


@_op
def do_rollout(d: Dashboard, sid: SetId, body: dict) -> str:

    from vmssctl.upgrade import begin

    api, prepared = _prepare_rollout(d, sid, body)
    if prepared.nothing_to_do:
        return NOTHING_TO_DO
    rollout = begin(d.journal(), replace(d.conn, subscription=sid.sub), api, prepared)
    _run_apart(d, rollout.id, "resume", sid)
    return f"rollout {rollout.id} started: {len(prepared.plan.batches)} batch(es)"


async def rollout_control(request: Request) -> Response:
    from vmssctl.upgrade import steer

    d = _dash(request)
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
    _run_apart(d, rid, op, SetId(r.subscription, r.resource_group, r.name))
    return JSONResponse({"ok": True, "message": f"{op} of rollout {rid} started"})


def _run_apart(d: Dashboard, rid: str, op: str, sid: SetId) -> None:
    """Run the rollout as `vmssctl rollout resume|rollback RID` in a process of its own: a DBOS workflow like any
    lone upgrade's (the dashboard's process can hold one workflow database, a set's rollout needs its own), which
    a restart of the dashboard does not stop. It connects as the journal records; its end is a notice here."""
    args = [sys.executable, "-m", "vmssctl", "rollout", op, rid, "-o", "json", "--yes"]
    # the journal through the environment, not argv: a database URL may carry a password, and argv is public (ps)
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            env={**os.environ, "VMSSCTL_JOURNAL": d.journal().location})

    def wait() -> tuple[str, bool]:
        _, err = proc.communicate()
        why = err.strip().splitlines()[-1] if err.strip() else ""
        return f"rollout {rid} ended with exit code {proc.returncode}" + (f": {why}" if why else ""), \
            proc.returncode == 0
    _when_done(d, sid, wait)


async def login_link(request: Request) -> Response:
    """A fresh one-time login link, for a second browser (needs the API token or a session)."""
    d = _dash(request)
    return JSONResponse({"url": d.login_link()})


async def rollouts_json(request: Request) -> Response:
    d = _dash(request)
    return JSONResponse([r.to_json() for r in d.journal().recent(50)])


STATIC_TYPES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}


async def static_file(request: Request) -> Response:
    """The page's own JS and CSS, shipped in the package (no CDN, works offline)."""
    name = request.path_params["file"]
    if name not in STATIC_TYPES:
        return PlainTextResponse("not found", 404)
    body = (resources.files("vmssctl.dashboard") / "static" / name).read_bytes()
    return Response(body, media_type=STATIC_TYPES[name], headers={"Cache-Control": "no-cache"})


SET = "/sets/{sub:uuid}/{rg}/{name}"  # a scale set's pages: its subscription, group and name


def build_app(d: Dashboard) -> Starlette:
    app = Starlette(routes=[
        Route("/", index),
        Route("/sets/{rg}/{name}", old_set_page),
        Route(SET, set_page),
        Route(SET + "/grid", grid_fragment),
        Route(SET + "/state", state_json),
        Route(SET + "/events", events),
        Route(SET + "/action", do_action, methods=["POST"]),
        Route(SET + "/scale", do_scale, methods=["POST"]),
        Route(SET + "/model", do_model, methods=["POST"]),
        Route(SET + "/rollout", do_rollout, methods=["POST"]),
        Route(SET + "/plan", do_plan, methods=["POST"]),
        Route("/rollouts", rollouts_json),
        Route("/fleets", fleets_page),
        Route("/fleets/{fid}", fleet_page),
        Route("/fleets/{fid}/{op}", fleet_decide, methods=["POST"]),
        Route("/login", login_link),
        Route("/rollouts/{rid}/{op}", rollout_control, methods=["POST"]),
        Route("/static/{file}", static_file),
    ], middleware=[Middleware(Security, dash=d)])
    app.state.dash = d
    return app


async def serve(d: Dashboard, sock) -> None:
    import uvicorn

    config = uvicorn.Config(build_app(d), log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=1, http="h11")  # (its event streams are proven on h11)
    await uvicorn.Server(config).serve(sockets=[sock])


def run_forever(d: Dashboard, sock) -> None:
    asyncio.run(serve(d, sock))

