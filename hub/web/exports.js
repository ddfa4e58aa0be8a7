// Exports: each job with its progress, its files to download, and a check of what is offered for
// download made in this browser: the manifest's Ed25519 signature against the hub's public key
// (WebCrypto) and every file's size and sha256 against the signed manifest; where the browser has
// no Ed25519, or the files are too large to hash here, the hub's own check of the stored export.

import { $, API, ago, api, cameraLink, dateTimeText, el, ms, spanText } from "./api.js";

const POLL_MS = 2000;
const MAX_HASH_BYTES = 512 * 1024 * 1024;     // files beyond this are left to `vigil-hub verify-export`
let timer = null;
const verdicts = new Map();                   // export id -> the verification's nodes, kept across refreshes

export function showExports() {
  clearTimeout(timer);
  refresh();
}

export function hideExports() {
  clearTimeout(timer);
  timer = null;
}

async function refresh() {
  let exports;
  try {
    ({ exports } = await api("GET", "/exports?limit=100"));
  } catch (err) {
    $("exports-status").textContent = err.message;
    return;
  }
  $("export-rows").replaceChildren(...exports.map(row));
  const busy = exports.filter((x) => x.status === "queued" || x.status === "running").length;
  $("exports-status").textContent = `${exports.length} export${exports.length === 1 ? "" : "s"}` + (busy ? `, ${busy} being made` : "");
  clearTimeout(timer);
  if (busy && !$("view-exports").hidden) timer = setTimeout(refresh, POLL_MS);
}

function row(x) {
  const status = el("td", { className: `export-${x.status}`, textContent: x.status });
  if (x.status === "running" || x.status === "queued") {
    status.append(" ", el("progress", { max: 1, value: x.progress }), ` ${Math.round(x.progress * 100)} %`);
  }
  if (x.error) status.append(el("div", { className: "why", textContent: x.error }));
  const files = el("td");
  if (x.status === "done") {
    const links = [...x.files.map((f) => [f.url, `${f.name} (${(f.bytes / 1e6).toFixed(1)} MB)`]),
                   [x.manifest_url, "manifest.json"], [x.signature_url, "manifest.json.sig"]];
    files.append(el("ul", {}, ...links.map(([href, text]) => el("li", {}, el("a", { href, download: "", textContent: text })))));
  }
  const check = el("td", { className: "verification" });
  if (verdicts.has(x.id)) check.append(verdicts.get(x.id));
  else if (x.status === "done") {
    check.append(el("button", { type: "button", textContent: "Verify", on: { click: () => verify(x, check) } }));
  }
  return el("tr", { dataset: { export: x.id } },
    el("td", {}, el("div", { textContent: x.id }),
       el("div", { className: "hint", textContent: `asked ${ago(x.created)}, expires ${dateTimeText(ms(x.expires))}` })),
    status,
    el("td", {}, ...x.cameras.map((c) => el("div", {},
      el("a", { href: cameraLink(c.camera, c.start), textContent: c.camera }),
      ` ${dateTimeText(ms(c.start))} (${spanText(ms(c.start), ms(c.end))})`))),
    el("td", { textContent: x.reason }), el("td", { textContent: x.requester }), files, check);
}

async function fetchBytes(url) {
  const resp = await fetch(url, { credentials: "same-origin" });
  if (!resp.ok) throw new Error(`${url.split("/").pop()}: HTTP ${resp.status}`);
  return new Uint8Array(await resp.arrayBuffer());
}

function pemToDer(pem) {
  const body = pem.replace(/-----[^-]+-----/g, "").replace(/\s+/g, "");
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}

const hex = (buf) => [...new Uint8Array(buf)].map((b) => b.toString(16).padStart(2, "0")).join("");

// the hub's own check (signature, files, sources where they are stored): for a browser without
// Ed25519 in WebCrypto, or files too large to hash here
async function hubCheck(x, say) {
  const checked = await api("GET", `/exports/${encodeURIComponent(x.id)}/verification`);
  if (checked.ok) {
    say(true, `manifest signed by ${checked.signing_key}; ${checked.files} files and ${checked.sources} source ` +
              "segments match (checked by the hub)");
  }
  for (const problem of checked.problems) say(false, problem);
  return checked.ok;
}

// the export checked in this browser: signature, then each file (or by the hub when the browser
// cannot); what was found, line by line
async function verify(x, cell) {
  const lines = el("ul", { className: "checks" });
  const say = (ok, text) => lines.append(el("li", { className: ok ? "ok" : "bad", textContent: `${ok ? "✓" : "✗"} ${text}` }));
  const box = el("div", {}, lines);
  cell.replaceChildren(el("span", { textContent: "checking…" }));
  let verdict = true;
  let where = "in this browser";
  try {
    const [keyResp, manifest, signature] = await Promise.all([
      fetch(`${API}/exports/public-key`, { credentials: "same-origin" }), fetchBytes(x.manifest_url),
      fetchBytes(x.signature_url)]);
    const keyId = keyResp.headers.get("X-Vigil-Key-Id") || "the hub's key";
    const signed = JSON.parse(new TextDecoder().decode(manifest));
    const total = signed.outputs.reduce((n, o) => n + o.bytes, 0);
    let key = null;
    try {
      key = await crypto.subtle.importKey("spki", pemToDer(await keyResp.text()), { name: "Ed25519" }, false,
                                          ["verify"]);
    } catch (err) {
      key = null;           // no Ed25519 in this browser's WebCrypto
    }
    if (!key || total > MAX_HASH_BYTES) {
      where = "by the hub";
      say(true, key ? `${(total / 1e9).toFixed(1)} GB of files: checked where they are stored`
                    : "this browser cannot check Ed25519 signatures: checked by the hub");
      verdict = await hubCheck(x, say);
    } else {
      const good = await crypto.subtle.verify({ name: "Ed25519" }, key, signature, manifest);
      say(good, good ? `manifest signed by ${keyId}` : `the manifest's signature does not match ${keyId}`);
      verdict &&= good;
      const idOk = signed.id === x.id;
      if (!idOk) say(false, `the manifest is export ${signed.id}, not ${x.id}`);
      verdict &&= idOk;
      for (const out of signed.outputs) {
        const listed = x.files.find((f) => f.name === out.name);
        if (!listed) {
          say(false, `${out.name}: in the manifest, not offered for download`);
          verdict = false;
          continue;
        }
        const data = await fetchBytes(listed.url);
        const digest = hex(await crypto.subtle.digest("SHA-256", data));
        const good = data.length === out.bytes && digest === out.sha256;
        say(good, good ? `${out.name}: ${data.length} bytes, sha256 ${digest.slice(0, 16)}… as signed`
          : `${out.name}: ${data.length} bytes, sha256 ${digest.slice(0, 16)}… differs from the manifest`);
        verdict &&= good;
      }
    }
  } catch (err) {
    say(false, `could not check: ${err.message}`);
    verdict = false;
  }
  box.prepend(el("strong", { className: verdict ? "ok" : "bad", textContent: verdict ? `verified ${where}`
                                                                                   : "NOT verified" }));
  box.dataset.verified = String(verdict);
  box.dataset.where = where;
  verdicts.set(x.id, box);
  cell.replaceChildren(box);
}
