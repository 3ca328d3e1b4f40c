// vmssctl dashboard: selection, operations and live updates. No framework, no build step.
(function () {
  "use strict";
  const body = document.body;
  const sub = body.dataset.sub, rg = body.dataset.rg, name = body.dataset.name;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const selected = new Set();
  const base = rg ? `/sets/${encodeURIComponent(sub)}/${encodeURIComponent(rg)}/${encodeURIComponent(name)}` : null;

  function say(text, ok) {
    const box = document.getElementById("status");
    const div = document.createElement("div");
    div.className = "msg" + (ok === false ? " bad" : "");
    div.textContent = text;
    box.appendChild(div);
    setTimeout(() => div.remove(), 9000);
  }

  async function post(path, payload) {
    const r = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(payload),
    });
    let data;
    try { data = await r.json(); } catch (e) { data = { ok: false, message: await r.text() }; }
    say(data.message || r.statusText, r.ok && data.ok !== false);
    return data;
  }

  // Every confirmation is asked in the page (a native confirm() cannot show a plan, and blocks the live page).
  // Resolves to null (cancelled), true (confirmed) or the text typed when `input` asks for one; with no `ok`
  // label there is nothing to confirm and the only button closes it.
  function ask(text, ok, input) {
    const dlg = document.getElementById("ask");
    const field = dlg.querySelector(".ask-input"), okButton = dlg.querySelector(".ask-ok");
    dlg.querySelector(".ask-text").textContent = text;
    field.hidden = !input; field.value = ""; field.placeholder = input || "";
    okButton.hidden = !ok; okButton.textContent = ok || "";
    dlg.querySelector(".ask-cancel").textContent = ok ? "cancel" : "close";
    field.onkeydown = (e) => { if (e.key === "Enter") { e.preventDefault(); dlg.close("ok"); } };  // (not cancel)
    dlg.returnValue = "";
    dlg.showModal();
    (input ? field : ok ? okButton : dlg.querySelector(".ask-cancel")).focus();
    return new Promise((resolve) => dlg.addEventListener("close", () => {
      if (dlg.returnValue !== "ok") resolve(null);
      else if (input) resolve(field.value.trim() || null);
      else resolve(true);
    }, { once: true }));
  }

  // Controls act only when they can: operations need a selection, a new rollout needs none in flight.
  function syncControls() {
    document.querySelectorAll("button.op").forEach((b) => {
      b.disabled = selected.size === 0;
      b.title = selected.size ? "" : "select instances, a fault domain or an update domain first";
    });
    const start = document.querySelector("#rollout-form button");
    const active = document.querySelector('#rollout .rollout[data-active="true"]');
    if (start) {
      start.disabled = !!active;
      start.title = active ? `rollout ${active.dataset.rollout} is ${active.dataset.state}: one at a time per set` : "";
    }
  }

  function markSelection() {
    document.querySelectorAll("#grid .vm").forEach((el) => el.classList.toggle("selected", selected.has(el.dataset.id)));
    const n = document.getElementById("selcount");
    if (n) n.textContent = `${selected.size} selected`;
    syncControls();
  }

  function chipsWhere(attr, value) {
    return Array.from(document.querySelectorAll(`#grid .vm[data-${attr}="${value}"]`));
  }

  document.addEventListener("click", async (ev) => {
    const t = ev.target;
    if (t.matches("#grid .vm")) {
      const id = t.dataset.id;
      selected.has(id) ? selected.delete(id) : selected.add(id);
      document.getElementById("details").textContent = t.title;
      markSelection();
    } else if (t.matches("#grid th.fd, #grid th.ud")) {
      const attr = t.classList.contains("fd") ? "fd" : "ud";
      const chips = chipsWhere(attr, t.dataset[attr]);
      const all = chips.length && chips.every((c) => selected.has(c.dataset.id));
      chips.forEach((c) => (all ? selected.delete(c.dataset.id) : selected.add(c.dataset.id)));
      markSelection();
    } else if (t.matches("#clear")) {
      selected.clear();
      markSelection();
    } else if (t.matches("button.op")) {
      const action = t.dataset.action;
      if (!selected.size) { say("select instances, a fault domain or an update domain first", false); return; }
      const ids = Array.from(selected).sort((a, b) => a - b);
      if (!await ask(`${action} instance(s) ${ids.join(", ")} of ${rg}/${name}?`, action)) return;
      await post(`${base}/action`, { action: action, instance_ids: ids });
    } else if (t.matches("button.fleet-op")) {  // a fleet's stage: approve, or reject with a reason
      const fid = t.dataset.fleet, stage = t.dataset.stage, op = t.dataset.op;
      const payload = { stage: stage };
      if (op === "reject") {
        const reason = await ask(`Reject stage ${stage} of fleet ${fid}: why? (the fleet halts with it)`, "reject",
                                 "the reason, recorded with the rejection");
        if (!reason) return;
        payload.reason = reason;
      } else if (!await ask(`Approve stage ${stage} of fleet ${fid}?`, "approve")) return;
      const r = await post(`/fleets/${encodeURIComponent(fid)}/${op}`, payload);
      if (r.ok !== false) setTimeout(() => location.reload(), 500);
    } else if (t.matches("button.rollout-op")) {
      const rid = t.closest(".rollout").dataset.rollout, op = t.dataset.op;
      if (!await ask(`${op} rollout ${rid}?`, op)) return;
      await post(`/rollouts/${encodeURIComponent(rid)}/${op}`, {});
    }
  });

  document.addEventListener("mouseover", (ev) => {
    if (ev.target.matches && ev.target.matches("#grid .vm")) document.getElementById("details").textContent = ev.target.title;
  });

  function formData(form) {
    const out = {};
    new FormData(form).forEach((v, k) => { if (String(v).trim() !== "") out[k] = String(v).trim(); });
    return out;
  }

  const forms = {
    scale: (d) => [`scale ${rg}/${name} to ${d.capacity} instances?`, "scale"],
    model: (d) => [`update the model of ${rg}/${name}: ${JSON.stringify(d)}?`, "model"],
  };
  document.addEventListener("submit", async (ev) => {
    const form = ev.target;
    if (form.id === "rollout-form") {  // confirm with the plan the CLI would show: batches, floor, estimate
      ev.preventDefault();
      const data = formData(form);
      const r = await fetch(`${base}/plan`, {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(data),
      });
      const plan = await r.json().catch(() => ({ ok: false, message: r.statusText }));
      if (!r.ok || plan.ok === false) { say(plan.message, false); return; }
      if (plan.nothing) { await ask(plan.message, null); return; }
      if (!await ask(plan.message, "start rollout")) return;
      await post(`${base}/rollout`, data);
      return;
    }
    const spec = forms[form.id];
    if (!spec) return;
    ev.preventDefault();
    const data = formData(form);
    const [question, path] = spec(data);
    if (!await ask(question, path)) return;
    await post(`${base}/${path}`, data);
  });

  // The index: every set of every subscription; the filter narrows the rows (every word must match), and the
  // table is fetched again every refresh interval with the filter kept.
  const index = document.querySelector("main.index");
  if (index) {
    const filter = document.getElementById("filter");
    const apply = () => {
      const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
      document.querySelectorAll("#sets tbody").forEach((tb) => {
        let shown = 0;
        tb.querySelectorAll("tr.set").forEach((tr) => {
          const hit = words.every((w) => tr.dataset.text.includes(w));
          tr.hidden = !hit; shown += hit ? 1 : 0;
        });
        const head = tb.querySelector("tr.sub");
        if (head) head.hidden = shown === 0;
      });
    };
    filter.addEventListener("input", apply);
    setInterval(async () => {
      const r = await fetch("/?part=table", { credentials: "same-origin" }).catch(() => null);
      if (r && r.ok) { document.getElementById("sets").innerHTML = await r.text(); apply(); }
    }, Number(index.dataset.refresh) || 5000);
  }

  syncControls();
  if (base && window.EventSource) {
    const conn = document.getElementById("conn");
    const es = new EventSource(`${base}/events`);
    es.onopen = () => { conn.textContent = "live"; conn.className = "live"; };
    es.onerror = () => { conn.textContent = "reconnecting..."; conn.className = ""; };
    es.addEventListener("grid", (m) => {
      document.getElementById("grid").innerHTML = m.data;
      markSelection();
    });
    es.addEventListener("rollout", (m) => { document.getElementById("rollout").innerHTML = m.data; syncControls(); });
    es.addEventListener("summary", (m) => { document.getElementById("summary").innerHTML = m.data; });
    es.addEventListener("history", (m) => { document.getElementById("history").innerHTML = m.data; });
    es.addEventListener("notice", (m) => { const n = JSON.parse(m.data); say(n.text, n.ok); });
  }
})();
