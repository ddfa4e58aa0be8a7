// The Vigil hub's page: signing in and out, and which view the address shows:
//   #/                      the fleet and the cameras grid
//   #/camera/NODE.CAM?t=…   one camera's day and the player (t: an instant to play from)
//   #/incidents, #/incidents/ID, #/exports
// Plain ES modules, no build step; the session is an HttpOnly cookie the hub sets, the page keeps
// only the CSRF token it needs for writes (in memory) and never the API token.

import { $, api, ms, session } from "./api.js";
import { hideCamera, showCamera } from "./camera.js";
import { hideExports, showExports } from "./exports.js";
import { hideFleet, showFleet } from "./fleet.js";
import { showIncident, showIncidents } from "./incidents.js";

const VIEWS = ["view-fleet", "view-camera", "view-incidents", "view-incident", "view-exports"];

function signedIn(who) {
  session.who = who;
  session.csrf = who ? who.csrf : null;
  $("sign-in").hidden = !!who;
  $("nav").hidden = !who;
  $("sign-out").hidden = !who;
  $("who").textContent = who ? `${who.name} (${who.role})` : "";
  document.body.dataset.role = who ? who.role : "";
  route();
}

function route() {
  const who = session.who;
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = (path || "/").split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  let view = null;
  if (who) {
    if (parts[0] === "camera" && parts[1]) view = "view-camera";
    else if (parts[0] === "incidents" && parts[1]) view = "view-incident";
    else if (parts[0] === "incidents") view = "view-incidents";
    else if (parts[0] === "exports") view = "view-exports";
    else view = "view-fleet";
  }
  for (const id of VIEWS) $(id).hidden = id !== view;
  for (const link of $("nav").querySelectorAll("a")) {
    link.classList.toggle("current", link.getAttribute("href") === `#/${parts[0] || ""}`);
  }
  if (view !== "view-fleet") hideFleet();
  if (view !== "view-camera") hideCamera();
  if (view !== "view-exports") hideExports();
  if (view === "view-fleet") showFleet();
  else if (view === "view-camera") {
    const at = params.get("t");
    showCamera(parts[1], at ? ms(at) : null);
  } else if (view === "view-incidents") showIncidents();
  else if (view === "view-incident") showIncident(Number(parts[1]));
  else if (view === "view-exports") showExports();
}

$("sign-in").addEventListener("submit", async (event) => {
  event.preventDefault();
  const token = $("token");
  try {
    const who = await api("POST", "/session", { token: token.value });
    $("sign-in-error").textContent = "";
    signedIn(who);
  } catch (err) {
    $("sign-in-error").textContent = err.message;
  } finally {
    token.value = "";               // the page never keeps the token
  }
});

$("sign-out").addEventListener("click", async () => {
  try { await api("DELETE", "/session"); } finally { signedIn(null); }
});

window.addEventListener("vigil:signed-out", () => { if (session.who) signedIn(null); });
window.addEventListener("hashchange", route);

async function start() {
  try {
    signedIn(await api("GET", "/session"));
  } catch (err) {
    signedIn(null);
  }
  window.vigilReady = true;
}

start();
