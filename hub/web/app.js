// The Vigil hub's page: sign-in and the fleet view. Plain ES module, no build step; every text
// from the API is put in the page with textContent, never as HTML.

const API = "/api/v1";
const REFRESH_MS = 5000;
const STALE_AFTER_MS = 120_000;     // an "online" node not heard from for this long is shown stale
let csrf = null;
let timer = null;

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const resp = await fetch(API + path, { method, headers, credentials: "same-origin",
                                         body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new ApiError(resp.status, data.error?.code, data.error?.message || resp.statusText);
  return data;
}

function show(signedIn, who) {
  $("sign-in").hidden = signedIn;
  $("fleet").hidden = !signedIn;
  $("cameras").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  $("who").textContent = signedIn ? `${who.name} (${who.role})` : "";
  document.body.dataset.role = signedIn ? who.role : "";
  clearInterval(timer);
  if (signedIn) {
    refreshFleet();
    timer = setInterval(refreshFleet, REFRESH_MS);
  }
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function gigabytes(n) {
  return n == null ? "–" : `${(n / 1e9).toFixed(1)} GB`;
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function replicaText(replica) {
  if (!replica) return "–";
  const lag = replica.lag_seconds == null ? "" : `, lag ${Math.round(replica.lag_seconds)} s`;
  return replica.ok ? `ok${lag}` : `FAILING${lag}${replica.error ? ": " + replica.error : ""}`;
}

function nodeState(node) {
  if (node.state === "online" && node.last_seen && Date.now() - Date.parse(node.last_seen) > STALE_AFTER_MS) {
    return "stale";
  }
  return node.accepted ? node.state : "pending";
}

// One tile per camera: its latest thumbnail (the first frame of the newest stored segment: the
// URL only changes when new footage is stored, so the browser caches it), its state and why.
function renderCameras(cameras) {
  const grid = $("camera-grid");
  const tiles = new Map([...grid.children].map((t) => [t.dataset.camera, t]));
  grid.replaceChildren(...cameras.map((camera) => {
    const tile = tiles.get(camera.id) || newTile(camera.id);
    const picture = tile.querySelector("img");
    const src = camera.stored_until
      ? `${API}/cameras/${encodeURIComponent(camera.id)}/thumbnail?at=${encodeURIComponent(camera.stored_until)}`
      : "";
    if (src && picture.dataset.src !== src) {
      picture.dataset.src = src;
      picture.hidden = false;
      tile.querySelector(".no-image").hidden = true;
      picture.src = src;
    } else if (!src) {
      picture.hidden = true;
      tile.querySelector(".no-image").hidden = false;
    }
    const state = camera.node_online ? camera.state : "offline";
    tile.querySelector(".state").textContent = state;
    tile.querySelector(".state").className = `state state-${state === "recording" ? "online" : "offline"}`;
    tile.querySelector(".why").textContent = state === "recording" ? "" : (camera.reason || camera.error || "");
    return tile;
  }));
}

function newTile(id) {
  const tile = document.createElement("figure");
  tile.className = "tile";
  tile.dataset.camera = id;
  const picture = document.createElement("img");
  picture.alt = `latest picture of ${id}`;
  picture.addEventListener("error", () => {
    picture.hidden = true;
    tile.querySelector(".no-image").hidden = false;
  });
  const none = document.createElement("div");
  none.className = "no-image";
  none.textContent = "no picture";
  none.hidden = true;
  const caption = document.createElement("figcaption");
  for (const [cls, text] of [["name", id], ["state", ""], ["why", ""]]) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    caption.append(span);
  }
  tile.append(picture, none, caption);
  return tile;
}

async function refreshFleet() {
  try {
    const [{ nodes }, { cameras }] = await Promise.all([api("GET", "/nodes"), api("GET", "/cameras")]);
    renderCameras(cameras);
    const body = $("nodes");
    body.replaceChildren();
    for (const node of nodes) {
      const mine = cameras.filter((c) => c.node === node.id);
      const recording = mine.filter((c) => c.state === "recording").length;
      const failed = mine.filter((c) => c.state === "failed").length;
      const row = body.insertRow();
      row.dataset.node = node.id;
      const state = nodeState(node);
      cell(row, node.id);
      cell(row, state, `state-${state}`).dataset.field = "state";
      cell(row, ago(node.last_seen));
      cell(row, `${recording} recording` + (failed ? `, ${failed} failed` : "") + ` of ${mine.length}`);
      cell(row, `${node.backlog.segments} segments`);
      cell(row, gigabytes(node.disk.free_bytes));
      cell(row, replicaText(node.replica), node.replica && !node.replica.ok ? "state-offline" : "");
      cell(row, node.last_error || "");
    }
    $("fleet-status").textContent = `${nodes.length} nodes, updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (err.status === 401) return show(false);
    $("fleet-status").textContent = `could not load the fleet: ${err.message}`;
  }
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token");
  try {
    const who = await api("POST", "/session", { token: token.value });
    csrf = who.csrf;
    $("sign-in-error").textContent = "";
    show(true, who);
  } catch (err) {
    $("sign-in-error").textContent = err.message;
  } finally {
    token.value = "";               // the page never keeps the token
  }
});

$("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "/session"); } finally { csrf = null; show(false); }
});

async function start() {
  try {
    const who = await api("GET", "/session");
    csrf = who.csrf;
    show(true, who);
  } catch (err) {
    show(false);
  }
  window.vigilReady = true;
}

start();
