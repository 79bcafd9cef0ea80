// The rollout page, live: follows /api/v1/rollouts/{id}/events (the session cookie authenticates it) and
// draws one square per tenant on a canvas, so 10,000 tenants cost one element, not 10,000. Only changed
// cells are repainted, once per animation frame. Retry / cancel / resume POST to the JSON API with the
// session's CSRF token, then reconnect the stream. window.tenantctlGrid lets tests and people look up
// a tenant's state without reading pixels.
"use strict";

(function () {
  const root = document.getElementById("rollout");
  const canvas = document.getElementById("grid");
  if (!root || !canvas) return;
  const ctx = canvas.getContext("2d");
  const tip = document.getElementById("tip");
  const csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const STATUSES = ["queued", "running", "succeeded", "failed", "skipped", "halted", "cancelled"];
  const style = getComputedStyle(document.documentElement);
  const COLORS = {};
  for (const s of STATUSES) COLORS[s] = style.getPropertyValue("--" + s).trim() || "#999";
  const SHOWN = Number(root.dataset.failuresShown) || 100;
  const byId = new Intl.Collator(undefined, { numeric: true }).compare;

  let ids = []; // tenant ids in cell order
  let cellOf = new Map(); // id -> cell index
  let rows = new Map(); // id -> [id, status, attempt, error_class, error]
  let counts = {};
  let state = root.dataset.state;
  let layout = null;
  let source = null;
  let full = true;
  let dirty = new Set();
  let frame = 0;
  let drawn = 0;
  const seen = { snapshot: 0, tenants: 0, counts: 0, end: 0 };

  // -- drawing ---------------------------------------------------------------------------------------
  function measure() {
    const n = Math.max(ids.length, 1);
    const size = n <= 200 ? 18 : n <= 2000 ? 10 : 6;
    const gap = size > 6 ? 2 : 1;
    const width = Math.max(canvas.parentElement.clientWidth - 16, size);
    const cols = Math.max(1, Math.floor((width + gap) / (size + gap)));
    const lines = Math.max(1, Math.ceil(ids.length / cols));
    const dpr = window.devicePixelRatio || 1;
    const w = cols * (size + gap) - gap;
    const h = lines * (size + gap) - gap;
    canvas.style.width = w + "px";
    canvas.style.height = h + "px";
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    layout = { size, gap, cols };
  }

  function paint(i) {
    const row = rows.get(ids[i]);
    const { size, gap, cols } = layout;
    ctx.fillStyle = COLORS[row ? row[1] : "queued"] || "#999";
    ctx.fillRect((i % cols) * (size + gap), Math.floor(i / cols) * (size + gap), size, size);
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  function render() {
    frame = 0;
    if (full || !layout) {
      measure();
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      for (let i = 0; i < ids.length; i++) paint(i);
      full = false;
    } else {
      for (const id of dirty) {
        const i = cellOf.get(id);
        if (i !== undefined) paint(i);
      }
    }
    dirty.clear();
    drawn = ids.length;
    showCounts();
    showFailures();
  }

  // -- the numbers around the grid --------------------------------------------------------------------
  function showCounts() {
    let total = 0;
    let done = 0;
    for (const s of STATUSES) {
      const n = counts[s] || 0;
      total += n;
      if (s !== "queued" && s !== "running") done += n;
      const el = document.querySelector('#counts [data-status="' + s + '"]');
      if (el) {
        el.textContent = String(n);
        el.parentElement.classList.toggle("zero", n === 0);
      }
    }
    const bar = document.getElementById("progress");
    bar.max = Math.max(total, 1);
    bar.value = done;
    document.getElementById("progress-text").textContent = done + " / " + total + " at rest";
    const badge = document.getElementById("state");
    badge.textContent = state;
    badge.className = "state state-" + state;
    root.dataset.state = state;
    canvas.dataset.total = String(total);
    canvas.dataset.done = String(done);
    canvas.dataset.drawn = String(drawn);
    enableActions();
  }

  function showFailures() {
    const failed = [];
    for (const id of ids) {
      const row = rows.get(id);
      if (row && row[1] === "failed") failed.push(row);
    }
    const body = document.getElementById("failures");
    const items = [];
    for (const row of failed.slice(0, SHOWN)) {
      const tr = document.createElement("tr");
      tr.dataset.tenant = row[0];
      const link = document.createElement("a");
      link.href = root.dataset.tenantUrl + encodeURIComponent(row[0]);
      link.textContent = row[0];
      const code = document.createElement("code");
      code.textContent = row[3] || "";
      for (const content of [link, String(row[2]), code, row[4] || ""]) {
        const td = document.createElement("td");
        td.append(content);
        tr.append(td);
      }
      tr.lastChild.className = "msg";
      items.push(tr);
    }
    body.replaceChildren(...items);
    document.getElementById("failures-none").hidden = failed.length > 0;
    document.getElementById("failures-table").hidden = failed.length === 0;
    const more = document.getElementById("failures-more");
    more.hidden = failed.length <= SHOWN;
    more.firstChild.textContent = failed.length - SHOWN + " more: ";
  }

  // -- the event stream -------------------------------------------------------------------------------
  function setLive(text, on) {
    const el = document.getElementById("live");
    el.textContent = text;
    el.classList.toggle("on", on);
    root.dataset.live = text;
  }

  function onSnapshot(data) {
    state = data.state;
    counts = data.counts;
    rows = new Map(data.tenants.map((r) => [r[0], r]));
    ids = data.tenants.map((r) => r[0]).sort(byId);
    cellOf = new Map(ids.map((id, i) => [id, i]));
    full = true;
    schedule();
  }

  function onTenants(changed) {
    for (const row of changed) {
      if (!cellOf.has(row[0])) {
        ids.push(row[0]);
        ids.sort(byId);
        cellOf = new Map(ids.map((id, i) => [id, i]));
        full = true;
      }
      rows.set(row[0], row);
      dirty.add(row[0]);
    }
    schedule();
  }

  function connect() {
    if (source) source.close();
    source = new EventSource(root.dataset.eventsUrl);
    const on = (name, fn) =>
      source.addEventListener(name, (e) => {
        seen[name] += 1;
        fn(JSON.parse(e.data));
      });
    on("snapshot", onSnapshot);
    on("tenants", onTenants);
    on("counts", (d) => {
      state = d.state;
      counts = d.counts;
      schedule();
    });
    on("end", (d) => {
      state = d.state;
      counts = d.counts;
      source.close();
      setLive("ended", false);
      schedule();
    });
    source.onopen = () => setLive("live", true);
    source.onerror = () => {
      const closed = source.readyState === EventSource.CLOSED;
      setLive(closed ? "disconnected: reload the page" : "reconnecting…", false);
    };
  }

  // -- retry / cancel / resume ------------------------------------------------------------------------
  function enableActions() {
    const allowed = {
      retry: (counts.failed || 0) > 0,
      cancel: state === "running" || state === "halted",
      resume: state === "halted" || state === "cancelled",
    };
    for (const button of document.querySelectorAll("#actions [data-action]")) {
      if (!button.dataset.busy) button.disabled = !allowed[button.dataset.action];
    }
  }

  function say(text, bad) {
    const el = document.getElementById("message");
    el.textContent = text;
    el.classList.toggle("bad", bad);
  }

  async function act(button) {
    const action = button.dataset.action;
    button.dataset.busy = "1";
    button.disabled = true;
    say(action + "…", false);
    try {
      const response = await fetch(root.dataset.apiUrl + "/" + action, {
        method: "POST",
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
        credentials: "same-origin",
      });
      if (response.ok) {
        say(action + ": accepted", false);
        connect();
      } else {
        let detail = response.statusText;
        try {
          detail = (await response.json()).detail || detail;
        } catch (_) {
          /* not a problem document */
        }
        say(action + " refused (" + response.status + "): " + detail, true);
      }
    } catch (err) {
      say(action + " failed: " + err, true);
    } finally {
      delete button.dataset.busy;
      enableActions();
    }
  }

  for (const button of document.querySelectorAll("#actions [data-action]")) {
    button.addEventListener("click", () => act(button));
  }

  // -- hover and click on the grid --------------------------------------------------------------------
  function cellAt(event) {
    if (!layout) return null;
    const box = canvas.getBoundingClientRect();
    const x = event.clientX - box.left;
    const y = event.clientY - box.top;
    const step = layout.size + layout.gap;
    const col = Math.floor(x / step);
    const line = Math.floor(y / step);
    if (x < 0 || y < 0 || col >= layout.cols || x % step > layout.size || y % step > layout.size) return null;
    const id = ids[line * layout.cols + col];
    return id === undefined ? null : id;
  }

  canvas.addEventListener("mousemove", (event) => {
    const id = cellAt(event);
    if (id === null) {
      tip.hidden = true;
      canvas.title = "";
      return;
    }
    const row = rows.get(id);
    const text = id + ": " + row[1] + " (attempt " + row[2] + ")" + (row[3] ? " · " + row[3] : "");
    tip.textContent = text;
    tip.hidden = false;
    const box = canvas.parentElement.getBoundingClientRect();
    const x = event.clientX - box.left;
    const left = x + 12 + tip.offsetWidth > box.width ? x - 12 - tip.offsetWidth : x + 12;
    tip.style.left = Math.max(0, left) + "px";
    tip.style.top = event.clientY - box.top + 12 + "px";
  });
  canvas.addEventListener("mouseleave", () => {
    tip.hidden = true;
  });
  canvas.addEventListener("click", (event) => {
    const id = cellAt(event);
    if (id !== null) window.location.href = root.dataset.tenantUrl + encodeURIComponent(id);
  });
  window.addEventListener("resize", () => {
    full = true;
    schedule();
  });

  window.tenantctlGrid = {
    statusOf: (id) => (rows.get(id) || [])[1] || null,
    state: () => state,
    count: () => drawn,
    counts: () => Object.assign({}, counts),
    snapshot: () => Object.fromEntries(ids.map((id) => [id, rows.get(id)[1]])),
    events: () => Object.assign({}, seen),
    cellCenter: (id) => {
      const i = cellOf.get(id);
      if (i === undefined || !layout) return null;
      const step = layout.size + layout.gap;
      const half = layout.size / 2;
      return { x: (i % layout.cols) * step + half, y: Math.floor(i / layout.cols) * step + half };
    },
    reconnect: connect,
  };

  connect();
})();
