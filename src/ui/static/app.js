// The dashboard: plain browser JavaScript on the public REST API, no build step. Live parts follow
// the NDJSON watch streams (registry, events) and resume where they left off after a drop; the
// rest is polled. The token, when auth is on, is kept in sessionStorage for this tab only.

const tokenKey = "orchestrator.token";
const pollMs = 5000;
const maxEvents = 200;
const $ = (selector) => document.querySelector(selector);

class Unauthorized extends Error {}

function authHeaders() {
  const token = sessionStorage.getItem(tokenKey);
  return token ? { authorization: `Bearer ${token}` } : {};
}

async function api(path, init = {}) {
  const response = await fetch(path, {
    ...init,
    headers: { ...authHeaders(), ...(init.headers ?? {}) },
  });
  if (response.status === 401 || response.status === 403) {
    askForToken(response.status === 403 ? "this token may not read the dashboard" : "");
    throw new Unauthorized(path);
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(body.message ?? `${path}: ${response.status}`);
  }
  return response;
}

function askForToken(problem) {
  $("#token-form").hidden = false;
  $("#token-error").textContent = problem;
  setConnection("down", "token needed");
}

function setConnection(state, text) {
  const badge = $("#connection");
  badge.className = `badge ${state}`;
  badge.textContent = text;
}

/** Builds a table row from cell values; a value {text, className} styles its cell. */
function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    const { text, className } = typeof cell === "object" && cell !== null ? cell : { text: cell };
    td.textContent = text ?? "";
    if (className) td.className = className;
    tr.append(td);
  }
  return tr;
}

/** An enum name without its prefix, lower case: SERVICE_STATUS_HEALTHY -> healthy. */
function enumLabel(value, prefix) {
  return String(value ?? "")
    .replace(prefix, "")
    .toLowerCase();
}

function timeLabel(iso) {
  if (!iso) return "—";
  const seconds = Math.round((Date.now() - Date.parse(iso)) / 1000);
  return seconds < 60 ? `${Math.max(0, seconds)} s ago` : new Date(iso).toLocaleTimeString();
}

/** Reads an NDJSON response line by line. */
async function* lines(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    let newline = buffered.indexOf("\n");
    while (newline >= 0) {
      const line = buffered.slice(0, newline).trim();
      buffered = buffered.slice(newline + 1);
      if (line !== "") yield JSON.parse(line);
      newline = buffered.indexOf("\n");
    }
  }
}

/** Runs `follow` again after it ends or fails, waiting longer each time (up to 10 s). */
async function keepFollowing(follow) {
  let delay = 500;
  for (;;) {
    try {
      await follow();
      delay = 500;
    } catch (error) {
      if (!(error instanceof Unauthorized)) setConnection("down", "reconnecting…");
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}

// --- registry: live from the watch, resumed from the last revision seen -------------------------

const services = new Map();
let registryRevision = "0";

function renderRegistry() {
  const body = $("#registry tbody");
  const names = [...services.keys()].sort();
  body.replaceChildren(
    ...names.map((name) => {
      const entry = services.get(name);
      const status = enumLabel(entry.status, "SERVICE_STATUS_");
      return row([
        entry.name,
        { text: status, className: `status-${status}` },
        timeLabel(entry.last_heartbeat),
        entry.version || "—",
        entry.base_url,
      ]);
    }),
  );
  body.parentElement.dataset.count = String(names.length);
  $("#registry-count").textContent = `${names.length} service${names.length === 1 ? "" : "s"}`;
}

async function followRegistry() {
  const response = await api(`/registry/watch?start_revision=${registryRevision}`);
  setConnection("live", "live");
  let first = true;
  for await (const change of lines(response)) {
    // A snapshot (the first watch, or a resume the change log no longer covers) replaces all.
    if (first && change.snapshot) services.clear();
    first = false;
    if (change.type === "WATCH_EVENT_TYPE_PUT") services.set(change.service.name, change.service);
    if (change.type === "WATCH_EVENT_TYPE_DELETE") services.delete(change.service.name);
    registryRevision = change.revision ?? registryRevision;
    if (!change.snapshot || change.type === "WATCH_EVENT_TYPE_SNAPSHOT_END") renderRegistry();
  }
}

// --- events: live from the watch, resumed after the last event seen -----------------------------

let lastEventId = "";

function addEvent(event) {
  const item = document.createElement("li");
  const time = new Date(event.timestamp).toLocaleTimeString();
  item.textContent = `${time} ${event.type}${event.subject ? ` ${event.subject}` : ""}`;
  const list = $("#events");
  list.prepend(item);
  while (list.children.length > maxEvents) list.lastElementChild.remove();
}

async function followEvents() {
  const after = lastEventId === "" ? "" : `?after_id=${encodeURIComponent(lastEventId)}`;
  const response = await api(`/infrastructure/events/watch${after}`);
  for await (const message of lines(response)) {
    if (message.event === undefined) continue; // the stream's opening line says where it starts
    lastEventId = message.event.id;
    addEvent(message.event);
  }
}

// --- polled: peers, runs, DLQ, node ----------------------------------------------------------------

async function refreshPeers() {
  const { peers } = await (await api("/peers")).json();
  $("#peers tbody").replaceChildren(
    ...peers.map((peer) => {
      const state = enumLabel(peer.state, "PEER_STATE_");
      return row([
        peer.url,
        peer.node_id || "—",
        { text: state, className: `status-${state}` },
        peer.lag_changes ?? "0",
        Math.round(peer.lag_ms ?? 0),
        timeLabel(peer.last_contact),
      ]);
    }),
  );
}

async function refreshRuns() {
  const { items } = await (await api("/workflows/history?page_size=20")).json();
  $("#runs tbody").replaceChildren(
    ...items.map((run) => {
      const status = enumLabel(run.status, "RUN_STATUS_");
      const steps = run.steps
        .map((step) => `${step.name}: ${enumLabel(step.status, "RUN_STATUS_")}`)
        .join(", ");
      return row([
        run.run_id,
        run.workflow,
        { text: status, className: `status-${status}` },
        steps,
        timeLabel(run.updated_at),
      ]);
    }),
  );
}

async function refreshDlq() {
  const stats = await (await api("/infrastructure/dlq/stats")).json();
  const shown = [
    ["pending retry", stats.pending_retry],
    ["retrying", stats.retrying],
    ["dead", stats.dead_events],
    ["resolved", stats.resolved],
    ["total", stats.total_events],
  ];
  $("#dlq").replaceChildren(
    ...shown.flatMap(([label, value]) => {
      const dt = document.createElement("dt");
      dt.textContent = label;
      const dd = document.createElement("dd");
      dd.textContent = String(value ?? 0);
      dd.dataset.stat = label;
      return [dt, dd];
    }),
  );
}

async function refreshNode() {
  const info = await (await api("/info")).json();
  $("#node").textContent = `${info.node_id ?? ""} · ${info.version ?? ""}`;
}

async function retryDlq() {
  $("#dlq-result").textContent = "retrying…";
  try {
    const answer = await (
      await api("/infrastructure/dlq/retry", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: "{}",
      })
    ).json();
    const results = answer.results ?? [];
    const resolved = results.filter((r) => r.outcome === "resolved").length;
    $("#dlq-result").textContent = `${results.length} retried, ${resolved} resolved`;
  } catch (error) {
    $("#dlq-result").textContent = error.message;
  }
  await refreshDlq().catch(() => {});
}

async function poll() {
  for (;;) {
    await Promise.allSettled([refreshPeers(), refreshRuns(), refreshDlq(), refreshNode()]);
    renderRegistry(); // "n s ago" moves on between changes
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(tokenKey, $("#token").value.trim());
  $("#token-form").hidden = true;
  location.reload();
});
$("#dlq-retry").addEventListener("click", retryDlq);

keepFollowing(followRegistry);
keepFollowing(followEvents);
poll();
