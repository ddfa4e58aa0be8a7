// What every view shares: the API call (with the session's CSRF token on writes), who is signed
// in, times, and small DOM helpers. Every text from the API goes into the page as text
// (textContent or a text node), never as HTML.

export const API = "/api/v1";

export const session = { csrf: null, who: null };

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

// One JSON call. A 401 (signed out, expired) is announced as a "vigil:signed-out" event, which
// app.js answers with the sign-in form.
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && session.csrf) headers["X-CSRF-Token"] = session.csrf;
  const resp = await fetch(API + path, { method, headers, credentials: "same-origin",
                                         body: body === undefined ? undefined : JSON.stringify(body) });
  if (resp.status === 204) return null;
  const data = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const err = new ApiError(resp.status, data.error?.code, data.error?.message || resp.statusText);
    if (resp.status === 401 && path !== "/session") window.dispatchEvent(new CustomEvent("vigil:signed-out"));
    throw err;
  }
  return data;
}

export const canWrite = () => session.who && session.who.role !== "viewer";

// -- times: the API speaks RFC 3339 UTC; the page shows the browser's local time ---------------

export const iso = (ms) => new Date(ms).toISOString();
export const ms = (text) => Date.parse(text);
const pad = (n, w = 2) => String(n).padStart(w, "0");

export function clockText(t, withMs = false) {
  const d = new Date(t);
  const base = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return withMs ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
}

export function dateText(t) {
  const d = new Date(t);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

export const dateTimeText = (t) => `${dateText(t)} ${clockText(t)}`;

export function spanText(start, end) {
  const s = Math.round((end - start) / 1000);
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

export function ago(isoText) {
  if (!isoText) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms(isoText)) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

export function localMidnight(t) {
  const d = new Date(t);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

// `<input type=datetime-local>` value (local time) <-> ms
export function localInputValue(t) {
  return `${dateText(t)}T${clockText(t)}`;
}

// -- DOM --------------------------------------------------------------------------------------

export const $ = (id) => document.getElementById(id);

// el("td", {className: "x", dataset: {a: 1}}, "text", child…): children are nodes or text
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "on") for (const [name, fn] of Object.entries(value)) node.addEventListener(name, fn);
    else node[key] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function options(select, values, selected) {
  select.replaceChildren(...values.map(([value, label]) => el("option", { value, textContent: label,
                                                                           selected: value === selected })));
}

// The API's search snippet: the incident's text escaped by the hub, the matches in <mark>…</mark>.
// Built as nodes (text nodes and <mark> elements), never parsed as HTML: whatever the text holds
// it stays text.
export function snippetNodes(snippet) {
  const decode = (s) => s.replace(/&(lt|gt|amp|quot|#x27|#39);/g, (_, e) =>
    ({ lt: "<", gt: ">", amp: "&", quot: '"', "#x27": "'", "#39": "'" })[e]);
  const nodes = [];
  const parts = snippet.split(/(<mark>|<\/mark>)/);
  let marked = false;
  for (const part of parts) {
    if (part === "<mark>") marked = true;
    else if (part === "</mark>") marked = false;
    else if (part) nodes.push(marked ? el("mark", { textContent: decode(part) }) : document.createTextNode(decode(part)));
  }
  return nodes;
}

export function cameraLink(camera, at) {
  return `#/camera/${encodeURIComponent(camera)}` + (at ? `?t=${encodeURIComponent(at)}` : "");
}
