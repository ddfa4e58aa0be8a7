// Incidents: the list with filters and full-text search (the hub's snippets, built as text and
// <mark> nodes, never parsed as HTML), and one incident: its fields, tags, cameras, annotations
// and audit trail. Writes only for operators (the API refuses the rest anyway).

import { $, ago, api, cameraLink, canWrite, dateTimeText, el, localInputValue, ms, options, snippetNodes, spanText }
  from "./api.js";

// -- the list -----------------------------------------------------------------------------------

let bound = false;
let searches = 0;             // only the latest search's answer is shown (an earlier one may come later)

export function showIncidents() {
  if (!bound) {
    bound = true;
    $("incident-filters").addEventListener("submit", (e) => {
      e.preventDefault();
      listIncidents();
    });
  }
  listIncidents();
}

async function listIncidents() {
  const params = new URLSearchParams();
  for (const [id, name] of [["if-q", "q"], ["if-status", "status"], ["if-severity", "severity"], ["if-tag", "tag"]]) {
    const value = $(id).value.trim();
    if (value) params.set(name, value);
  }
  params.set("limit", "100");
  $("incidents-status").textContent = "searching…";
  const mine = ++searches;
  let found;
  try {
    found = await api("GET", `/incidents?${params}`);
  } catch (err) {
    if (mine === searches) $("incidents-status").textContent = err.message;
    return;
  }
  if (mine !== searches) return;
  const rows = found.incidents.map((i) => {
    const title = el("td", {}, el("a", { href: `#/incidents/${i.id}`, textContent: i.title }));
    if (i.snippet) title.append(el("div", { className: "snippet" }, ...snippetNodes(i.snippet)));
    return el("tr", { dataset: { incident: i.id } },
      el("td", { textContent: `#${i.id}` }), title,
      el("td", { className: `sev-${i.severity}`, textContent: i.severity }),
      el("td", { textContent: i.status }),
      el("td", { textContent: i.assignee || "" }),
      el("td", { textContent: i.cameras.map((c) => c.camera).join(", ") }),
      el("td", { textContent: `${dateTimeText(ms(i.start))} (${spanText(ms(i.start), ms(i.end))})` }),
      el("td", { textContent: ago(i.updated) }));
  });
  $("incident-rows").replaceChildren(...rows);
  $("incidents-status").textContent = `${rows.length}${found.next_offset != null ? "+" : ""} incidents` +
    (found.search_capped ? " (ranked among the newest 5,000 matches: narrow the words for older ones)" : "");
}

// -- one incident --------------------------------------------------------------------------------

let shown = null;             // the incident on screen
let detailBound = false;

let opened = 0;

export async function showIncident(id) {
  bindDetail();
  const mine = ++opened;
  let incident;
  try {
    incident = await api("GET", `/incidents/${id}`);
  } catch (err) {
    if (mine === opened) $("incident-title").textContent = err.message;
    return;
  }
  if (mine !== opened) return;
  if (!shown || shown.id !== incident.id) $("an-at").value = "";     // defaults to this incident's start
  shown = incident;
  renderIncident();
  loadAnnotations();
  loadAudit();
}

function bindDetail() {
  if (detailBound) return;
  detailBound = true;
  $("incident-edit").addEventListener("submit", async (e) => {
    e.preventDefault();
    const assignee = $("ie-assignee").value.trim();
    await change({ status: $("ie-status").value, severity: $("ie-severity").value, assignee: assignee || null },
                 "ie-error");
  });
  $("tag-add").addEventListener("submit", async (e) => {
    e.preventDefault();
    const name = $("tag-name").value.trim();
    if (!name || shown.tags.includes(name)) return;
    if (await change({ tags: [...shown.tags, name] }, "tag-error")) $("tag-name").value = "";
  });
  $("annotation-add").addEventListener("submit", async (e) => {
    e.preventDefault();
    const at = new Date($("an-at").value).getTime();
    try {
      await api("POST", "/annotations", { camera: $("an-camera").value, at: new Date(at).toISOString(),
        kind: $("an-kind").value, text: $("an-text").value, incident: shown.id });
      $("an-text").value = "";
      $("an-error").textContent = "";
      loadAnnotations();
      loadAudit();
    } catch (err) {
      $("an-error").textContent = err.message;
    }
  });
}

async function change(fields, errorId) {
  try {
    shown = await api("PATCH", `/incidents/${shown.id}`, fields);
    $(errorId).textContent = "";
    renderIncident();
    loadAudit();
    return true;
  } catch (err) {
    $(errorId).textContent = err.message;
    return false;
  }
}

function renderIncident() {
  const i = shown;
  $("incident-title").textContent = `#${i.id} ${i.title}`;
  $("incident-meta").textContent = `${i.severity}, ${i.status}` + (i.assignee ? `, assigned to ${i.assignee}` : "") +
    `; created ${dateTimeText(ms(i.created))} by ${i.created_by}, updated ${ago(i.updated)} by ${i.updated_by}` +
    (i.holding ? "; its footage is held" : "");
  $("incident-description").textContent = i.description;
  $("ie-status").value = i.status;
  $("ie-severity").value = i.severity;
  $("ie-assignee").value = i.assignee || "";
  $("incident-tags").replaceChildren(...i.tags.map((tag) => {
    const chip = el("span", { className: "chip", textContent: tag });
    if (canWrite()) {
      chip.append(el("button", { type: "button", className: "write", textContent: "×", title: `remove ${tag}`,
        on: { click: () => change({ tags: i.tags.filter((t) => t !== tag) }, "tag-error") } }));
    }
    return chip;
  }));
  $("incident-cameras").replaceChildren(...i.cameras.map((c) => el("li", {},
    el("a", { href: cameraLink(c.camera, c.start), textContent: c.camera }),
    ` ${dateTimeText(ms(c.start))} – ${dateTimeText(ms(c.end))} (${spanText(ms(c.start), ms(c.end))})`)));
  options($("an-camera"), i.cameras.map((c) => [c.camera, c.camera]), i.cameras[0]?.camera);
  if (!$("an-at").value) $("an-at").value = localInputValue(ms(i.start));
}

async function loadAnnotations() {
  const id = shown.id;
  try {
    const { annotations } = await api("GET", `/annotations?incident=${id}&limit=500`);
    if (shown.id !== id) return;
    $("incident-annotations").replaceChildren(...annotations.map((a) => el("li", { dataset: { annotation: a.id } },
      el("a", { href: cameraLink(a.camera, a.start), textContent: dateTimeText(ms(a.start)) }),
      ` ${a.camera} `, el("strong", { textContent: a.kind }), ` ${a.text} `,
      el("span", { className: "hint", textContent: `by ${a.created_by}` }))));
  } catch (err) {
    $("incident-annotations").replaceChildren(el("li", { textContent: err.message }));
  }
}

async function loadAudit() {
  const id = shown.id;
  try {
    const { audit } = await api("GET", `/incidents/${id}/audit?limit=200`);
    if (shown.id !== id) return;
    $("incident-audit").replaceChildren(...audit.map((a) => el("tr", {},
      el("td", { textContent: dateTimeText(ms(a.at)) }), el("td", { textContent: a.actor }),
      el("td", { textContent: `${a.action} ${a.entity} ${a.entity_id}` }),
      el("td", { className: "changes", textContent: Object.entries(a.changes)
        .map(([field, v]) => `${field}: ` + (Array.isArray(v) && v.length === 2
          ? `${JSON.stringify(v[0])} → ${JSON.stringify(v[1])}` : JSON.stringify(v)))
        .join("; ") }))));
  } catch (err) {
    $("incident-audit").replaceChildren(el("tr", {}, el("td", { textContent: err.message })));
  }
}
