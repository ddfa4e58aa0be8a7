// The fleet view: every node (state, last seen, cameras, backlog, disk, replica, last error) and
// a tile per camera (latest picture, state, why it fails); refreshed every 5 s while shown.

import { $, API, ago, api, cameraLink, el } from "./api.js";

const REFRESH_MS = 5000;
const STALE_AFTER_MS = 120_000;     // an "online" node not heard from for this long is shown stale
let timer = null;

export function showFleet() {
  refresh();
  clearInterval(timer);
  timer = setInterval(refresh, REFRESH_MS);
}

export function hideFleet() {
  clearInterval(timer);
  timer = null;
}

const gigabytes = (n) => (n == null ? "–" : `${(n / 1e9).toFixed(1)} GB`);

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

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

// One tile per camera: its latest picture (the first frame of the newest stored segment: the URL
// only changes when new footage is stored, so the browser caches it), its state and why.
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
  const picture = el("img", { alt: `latest picture of ${id}` });
  const none = el("div", { className: "no-image", textContent: "no picture", hidden: true });
  picture.addEventListener("error", () => {
    picture.hidden = true;
    none.hidden = false;
  });
  const caption = el("figcaption", {},
    el("span", { className: "name", textContent: id }), el("span", { className: "state" }),
    el("span", { className: "why" }));
  const link = el("a", { href: cameraLink(id), title: `open ${id}` }, picture, none);
  return el("figure", { className: "tile", dataset: { camera: id } }, link, caption);
}

async function refresh() {
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
    $("fleet-status").textContent = `${nodes.length} node${nodes.length === 1 ? "" : "s"}, updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    if (err.status !== 401) $("fleet-status").textContent = `could not load the fleet: ${err.message}`;
  }
}
