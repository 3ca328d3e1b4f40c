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

  function markSelection() {
    document.querySelectorAll("#grid .vm").forEach((el) => el.classList.toggle("selected", selected.has(el.dataset.id)));
    const n = document.getElementById("selcount");
    if (n) n.textContent = `${selected.size} selected`;
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
      if (!confirm(`${action} instance(s) ${ids.join(", ")} of ${rg}/${name}?`)) return;
      await post(`${base}/action`, { action: action, instance_ids: ids });
    } else if (t.matches("button.fleet-op")) {  // a fleet's stage: approve, or reject with a reason
      const fid = t.dataset.fleet, stage = t.dataset.stage, op = t.dataset.op;
      const payload = { stage: stage };
      if (op === "reject") {
        const reason = prompt(`Reject stage ${stage} of fleet ${fid}: why? (the fleet halts with it)`);
        if (!reason) return;
        payload.reason = reason;
      } else if (!confirm(`Approve stage ${stage} of fleet ${fid}?`)) return;
      const r = await post(`/fleets/${encodeURIComponent(fid)}/${op}`, payload);
      if (r.ok !== false) setTimeout(() => location.reload(), 500);
    } else if (t.matches("button.rollout-op")) {
      const rid = t.closest(".rollout").dataset.rollout, op = t.dataset.op;
      if (!confirm(`${op} rollout ${rid}?`)) return;
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
      if (!confirm(`${plan.message}\n\nStart this rollout?`)) return;
      await post(`${base}/rollout`, data);
      return;
    }
    const spec = forms[form.id];
    if (!spec) return;
    ev.preventDefault();
    const data = formData(form);
    const [question, path] = spec(data);
    if (!confirm(question)) return;
    await post(`${base}/${path}`, data);
  });

  if (base && window.EventSource) {
    const conn = document.getElementById("conn");
    const es = new EventSource(`${base}/events`);
    es.onopen = () => { conn.textContent = "live"; conn.className = "live"; };
    es.onerror = () => { conn.textContent = "reconnecting..."; conn.className = ""; };
    es.addEventListener("grid", (m) => {
      document.getElementById("grid").innerHTML = m.data;
      markSelection();
    });
    es.addEventListener("rollout", (m) => { document.getElementById("rollout").innerHTML = m.data; });
    es.addEventListener("summary", (m) => { document.getElementById("summary").innerHTML = m.data; });
    es.addEventListener("history", (m) => { document.getElementById("history").innerHTML = m.data; });
    es.addEventListener("notice", (m) => { const n = JSON.parse(m.data); say(n.text, n.ok); });
  }
})();
