// The camera view: a day's timeline over the player. Click the timeline to play from that instant;
// drag to select a range, then play it, make an incident or an export of it (on this camera and
// any others), or annotate it. The player's wall-clock time moves the playhead; playing past
// midnight turns the day.

import { $, api, canWrite, clockText, dateText, dateTimeText, el, iso, localMidnight, ms, options, spanText }
  from "./api.js";
import { Player } from "./player.js";
import { Timeline, ZOOMS, zoomLabel } from "./timeline.js";

const DAY = 86_400_000;
const REFRESH_MS = 15_000;          // today's timeline is fetched again this often
const STEP_MS = 10_000;             // ← and →
const GAP_REASONS = ["auth_failed", "stream_not_found", "unsupported_codec", "camera_unreachable", "stream_ended",
  "timestamp_jump", "gop_too_long", "disk_full", "edge_restart", "quarantined", "evicted", "retention_expired",
  "not_synced", "edge_offline", "in_progress", "unknown"];

let current = null;

export function showCamera(camera, at) {
  if (current && current.camera === camera) {
    if (at != null) current.play(at);
    return;
  }
  hideCamera();
  current = new CameraView(camera, at);
}

export function hideCamera() {
  if (current) current.close();
  current = null;
}

function toMs(list, extra) {
  return list.map((x) => ({ ...x, ...(extra ? extra(x) : {}), start: ms(x.start), end: ms(x.end) }));
}

class CameraView {
  constructor(camera, at) {
    this.camera = camera;
    this.abort = new AbortController();
    this.dayStart = null;
    this.selection = null;
    this.formMode = null;
    this.cameras = null;
    $("camera-title").textContent = camera;
    $("camera-state").textContent = "";
    $("clock").textContent = "";
    delete $("clock").dataset.ms;
    $("player-status").textContent = "";
    $("selection-bar").hidden = true;
    $("selection-form").hidden = true;
    this.timeline = new Timeline($("timeline"), {
      play: (t) => this.play(t),
      select: (a, b) => this.select(a, b),
      hover: (text) => { $("timeline-hover").textContent = text; },
      view: (a, b) => this.viewChanged(a, b),
    }, this.abort.signal);
    this.player = new Player($("video"), camera, {
      time: (t) => this.onTime(t),
      status: (text) => { $("player-status").textContent = text; },
      stopped: (reason) => { $("player-status").textContent = reason; $("play").textContent = "Play"; },
    }, this.abort.signal);
    window.vigilPlayer = this.player;               // its errors and window, for diagnosis (and the tests)
    this.legend();
    this.bind();
    this.openAt(at ?? Date.now(), at != null);
    this.timer = setInterval(() => this.refreshToday(), REFRESH_MS);
  }

  close() {
    this.abort.abort();
    clearInterval(this.timer);
    clearTimeout(this.heatTimer);
    this.player.destroy();
  }

  on(target, name, fn) {
    target.addEventListener(name, fn, { signal: this.abort.signal });
  }

  bind() {
    this.on($("day-prev"), "click", () => this.loadDay(this.dayStart - DAY / 2));
    this.on($("day-next"), "click", () => this.loadDay(this.dayStart + DAY * 1.5));
    this.on($("day"), "change", () => {
      const [y, m, d] = $("day").value.split("-").map(Number);
      if (y) this.loadDay(new Date(y, m - 1, d).getTime());
    });
    this.on($("zoom-in"), "click", () => this.zoom(1));
    this.on($("zoom-out"), "click", () => this.zoom(-1));
    this.on($("go-now"), "click", () => this.openAt(Date.now(), false));
    this.on($("play"), "click", () => this.toggle());
    this.on($("speed"), "change", () => this.player.setRate(Number($("speed").value)));
    this.on($("prev-gap"), "click", () => this.stepGap(-1));
    this.on($("next-gap"), "click", () => this.stepGap(1));
    this.on($("prev-incident"), "click", () => this.stepIncident(-1));
    this.on($("next-incident"), "click", () => this.stepIncident(1));
    this.on($("selection-play"), "click", () => this.selection && this.play(this.selection[0], this.selection[1]));
    this.on($("selection-clear"), "click", () => this.select(null));
    this.on($("selection-incident"), "click", () => this.openForm("incident"));
    this.on($("selection-export"), "click", () => this.openForm("export"));
    this.on($("selection-annotate"), "click", () => this.openForm("annotation"));
    this.on($("sf-cancel"), "click", () => { $("selection-form").hidden = true; });
    this.on($("selection-form"), "submit", (e) => { e.preventDefault(); this.submitForm(); });
    this.on(document, "keydown", (e) => this.key(e));
  }

  // the key to what this day shows: recorded, the gap reasons present, incidents, holds
  legend(day) {
    const reasons = day ? [...new Set(day.gaps.map((g) => g.reason))] : [];
    $("legend").replaceChildren(el("span", { className: "key tl-covered-key", textContent: "recorded" }),
      ...GAP_REASONS.filter((r) => reasons.includes(r)).map((r) => el("span", { className: `key gap-${r}`,
                                                                                 textContent: r })),
      el("span", { className: "key tl-heat-key", textContent: "activity" }),
      el("span", { className: "key tl-incident-key", textContent: "incident" }),
      el("span", { className: "key tl-hold-key", textContent: "held" }));
  }

  async openAt(t, playIt) {
    await this.loadDay(t);
    this.timeline.setView(t, playIt ? 4 : 0);
    this.showZoom();
    if (playIt) this.play(t);
    this.loadCameraState();
  }

  async loadCameraState() {
    try {
      const c = await api("GET", `/cameras/${encodeURIComponent(this.camera)}`);
      const state = c.node_online ? c.state : "offline";
      $("camera-state").textContent = state + (state === "recording" ? "" : `: ${c.reason || c.error || ""}`);
      $("camera-state").className = `state-${state === "recording" ? "online" : "offline"}`;
    } catch (err) {
      $("camera-state").textContent = err.message;
    }
  }

  // the day holding instant t (local midnight to midnight): timeline, incidents, annotations
  async loadDay(t, keepView = false) {
    const start = localMidnight(t);
    const end = start + DAY;
    const mine = (this.loads = (this.loads || 0) + 1);   // only the latest request is shown
    this.loadingDay = start;
    window.vigilDayLoad = { day: dateText(start), n: mine, state: "loading" };   // for diagnosis (and the tests)
    const until = Math.min(end, Date.now());
    const cam = encodeURIComponent(this.camera);
    const t0 = performance.now();
    const empty = { covered: [], gaps: [], holds: [] };
    let timeline = empty;
    let incidents = [];
    let annotations = [];
    if (until > start) {
      const range = `start=${iso(start)}&end=${iso(until)}`;
      try {
        [timeline, { incidents }, { annotations }] = await Promise.all([
          api("GET", `/cameras/${cam}/timeline?${range}`),
          api("GET", `/incidents?camera=${cam}&${range}&sort=start&limit=500`),
          api("GET", `/annotations?camera=${cam}&${range}&limit=500`)]);
      } catch (err) {
        window.vigilDayLoad = { day: dateText(start), n: mine, state: `failed: ${err.message}` };
        $("timeline-hover").textContent = `could not load the timeline: ${err.message}`;
        if (mine === this.loads) {         // the playhead may ask again, not sooner than in 2 s
          this.loadingDay = null;
          this.dayRetryAt = Date.now() + 2000;
        }
        return;
      }
    }
    if (this.abort.signal.aborted || mine !== this.loads) {
      window.vigilDayLoad = { day: dateText(start), n: mine, state: `superseded by load ${this.loads}` };
      return;
    }
    window.vigilDayLoad = { day: dateText(start), n: mine, state: "shown" };
    const fetched = performance.now();
    this.dayStart = start;
    $("day").value = dateText(start);
    const onThisCamera = (i) => {
      const links = i.cameras.filter((c) => c.camera === this.camera);
      return { start: Math.min(...links.map((c) => ms(c.start))), end: Math.max(...links.map((c) => ms(c.end))) };
    };
    if (!keepView) this.timeline.view = [0, 0];
    this.timeline.setDay({
      start, end,
      covered: toMs(timeline.covered), gaps: toMs(timeline.gaps), holds: toMs(timeline.holds),
      incidents: incidents.map((i) => ({ id: i.id, title: i.title, ...onThisCamera(i) })),
      annotations: toMs(annotations),
    });
    this.showZoom();
    this.legend(this.timeline.day);
    window.vigilTimeline = { fetchMs: fetched - t0, renderMs: this.timeline.lastRenderMs,
                             totalMs: performance.now() - t0, covered: timeline.covered.length,
                             gaps: timeline.gaps.length };
  }

  refreshToday() {
    if (this.dayStart != null && Date.now() < this.dayStart + DAY && !this.timeline.pressed) {
      this.loadDay(this.dayStart, true);
    }
  }

  // the heat strip of what is shown: the hub's activity index at about one step per 3 px
  viewChanged(a, b) {
    clearTimeout(this.heatTimer);
    this.heatTimer = setTimeout(() => this.loadActivity(a, b), 150);
  }

  async loadActivity(a, b) {
    const end = Math.min(b, Date.now());
    const mine = (this.heatLoads = (this.heatLoads || 0) + 1);
    if (end <= a) return this.timeline.setActivity(null);
    const width = this.timeline.root.getBoundingClientRect().width || 1000;
    const step = Math.max(1, Math.round((end - a) / 1000 / (width / 3)));
    try {
      const act = await api("GET", `/cameras/${encodeURIComponent(this.camera)}/activity?start=${iso(a)}` +
                                   `&end=${iso(end)}&step=${step}`);
      if (mine !== this.heatLoads || this.abort.signal.aborted) return;
      this.timeline.setActivity({ start: ms(act.start), step: act.step_s * 1000, level: act.level, kbps: act.kbps,
                                  threshold: act.threshold });
    } catch (err) {
      if (mine === this.heatLoads) this.timeline.setActivity(null);   // no series (older footage): no strip
    }
  }

  showZoom() {
    $("zoom-label").textContent = zoomLabel(ZOOMS[this.timeline.zoom]);
  }

  zoom(steps) {
    this.timeline.zoomBy(steps);
    this.showZoom();
  }

  play(t, until = null) {
    this.timeline.setPlayhead(t);
    delete $("clock").dataset.ms;                     // until the first frame from t is on screen
    $("clock").textContent = `→ ${dateText(t)} ${clockText(t)}`;
    $("play").textContent = "Pause";
    this.player.setRate(Number($("speed").value));
    this.player.playFrom(t, until);
  }

  toggle() {
    if (this.player.toggle()) {
      $("play").textContent = this.player.video.paused ? "Play" : "Pause";
    } else {
      this.play(this.timeline.playhead ?? (this.timeline.view[0] + this.timeline.view[1]) / 2);
    }
  }

  onTime(t) {
    const clock = $("clock");
    clock.textContent = `${dateText(t)} ${clockText(t, true)}`;
    clock.dataset.ms = String(Math.round(t));
    this.timeline.setPlayhead(t);
    if (this.dayStart != null && (t < this.dayStart || t >= this.dayStart + DAY)) {
      if (this.loadingDay !== localMidnight(t) && !(Date.now() < this.dayRetryAt)) {
        this.loadDay(t).then(() => this.timeline.setView(t));
      }
    } else if (!this.timeline.pressed && (t < this.timeline.view[0] || t > this.timeline.view[1])) {
      this.timeline.setView(t + (this.timeline.view[1] - this.timeline.view[0]) * 0.4);   // follow the playhead
    }
  }

  here() {
    return this.timeline.playhead ?? (this.timeline.view[0] + this.timeline.view[1]) / 2;
  }

  // to where footage resumes after the next (or previous) gap
  stepGap(direction) {
    const t = this.here();
    const gaps = this.timeline.day.gaps.filter((g) => g.end <= Date.now());
    const target = direction > 0 ? gaps.find((g) => g.start > t + 500)
      : [...gaps].reverse().find((g) => g.end < t - 2000);
    if (target) this.play(target.end);
    else $("player-status").textContent = `no ${direction > 0 ? "later" : "earlier"} gap this day`;
  }

  stepIncident(direction) {
    const t = this.here();
    const list = [...this.timeline.day.incidents].sort((a, b) => a.start - b.start);
    const target = direction > 0 ? list.find((i) => i.start > t + 1000)
      : list.reverse().find((i) => i.start < t - 2000);
    if (target) this.play(target.start);
    else $("player-status").textContent = `no ${direction > 0 ? "later" : "earlier"} incident this day`;
  }

  select(a, b) {
    this.selection = a == null ? null : [a, b];
    this.timeline.setSelection(this.selection);
    $("selection-bar").hidden = !this.selection;
    if (!this.selection) $("selection-form").hidden = true;
    else $("selection-text").textContent = `${dateTimeText(a)} – ${clockText(b)} (${spanText(a, b)})`;
  }

  async openForm(mode) {
    if (!this.selection || !canWrite()) return;
    this.formMode = mode;
    const form = $("selection-form");
    for (const node of form.querySelectorAll("label, fieldset")) {
      node.hidden = !node.classList.contains(`for-${mode}`);
    }
    $("selection-form-title").textContent = { incident: "New incident", export: "New export",
                                              annotation: "New annotation" }[mode] + ` of ${$("selection-text").textContent}`;
    $("sf-error").textContent = "";
    if (!this.cameras) this.cameras = (await api("GET", "/cameras")).cameras.map((c) => c.id);
    $("sf-cameras").replaceChildren(...this.cameras.map((id) => el("label", { className: "check" },
      el("input", { type: "checkbox", value: id, checked: id === this.camera }), id)));
    options($("sf-incident"), [["", "none"], ...this.timeline.day.incidents.map((i) => [String(i.id),
      `#${i.id} ${i.title}`])], "");
    form.hidden = false;
    form.querySelector(`.for-${mode} input, .for-${mode} select`)?.focus();
  }

  async submitForm() {
    const [a, b] = this.selection;
    const picked = [...$("sf-cameras").querySelectorAll("input:checked")].map((i) => i.value);
    const links = picked.map((camera) => ({ camera, start: iso(a), end: iso(b) }));
    try {
      if (this.formMode === "incident") {
        const tags = $("sf-tags").value.split(",").map((s) => s.trim()).filter(Boolean);
        const made = await api("POST", "/incidents", { title: $("sf-title").value, severity: $("sf-severity").value,
          description: $("sf-description").value, tags, cameras: links });
        location.hash = `#/incidents/${made.id}`;
      } else if (this.formMode === "export") {
        await api("POST", "/exports", { cameras: links, reason: $("sf-reason").value });
        location.hash = "#/exports";
      } else {
        const incident = $("sf-incident").value;
        await api("POST", "/annotations", { camera: this.camera, start: iso(a), end: iso(b),
          kind: $("sf-kind").value, text: $("sf-text").value, incident: incident ? Number(incident) : null });
        $("selection-form").hidden = true;
        this.loadDay(this.dayStart, true);
      }
    } catch (err) {
      $("sf-error").textContent = err.message;
    }
  }

  key(e) {
    if (e.target.closest("input, textarea, select") || e.ctrlKey || e.metaKey || e.altKey) return;
    const actions = {
      " ": () => this.toggle(),
      ArrowLeft: () => this.play(this.here() - STEP_MS),
      ArrowRight: () => this.play(this.here() + STEP_MS),
      "[": () => this.stepGap(-1),
      "]": () => this.stepGap(1),
      ",": () => this.stepIncident(-1),
      ".": () => this.stepIncident(1),
      "+": () => this.zoom(1),
      "=": () => this.zoom(1),
      "-": () => this.zoom(-1),
      PageUp: () => this.loadDay(this.dayStart - DAY / 2),
      PageDown: () => this.loadDay(this.dayStart + DAY * 1.5),
      Escape: () => this.select(null),
    };
    for (const rate of ["1", "2", "4", "8"]) {
      actions[rate] = () => { $("speed").value = rate; this.player.setRate(Number(rate)); };
    }
    const action = actions[e.key];
    if (action) {
      e.preventDefault();
      action();
    }
  }
}
