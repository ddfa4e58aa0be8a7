// A camera's day on a strip: recorded intervals, gaps coloured by reason (the reason and the
// edge's words on hover), a heat strip of activity (the hub's activity index: where the video's
// bit rate rose above the camera's own baseline), evidence holds, incidents and annotations, "now"
// and the playhead.
// The day's data is fetched once (one timeline call per day); zooming and panning only re-draw
// what is inside the view. Click plays from an instant, drag selects a range, the wheel zooms.

import { clockText, el, spanText } from "./api.js";

const MIN = 60_000;
const HOUR = 60 * MIN;
export const ZOOMS = [24 * HOUR, 12 * HOUR, 6 * HOUR, 3 * HOUR, HOUR, 30 * MIN, 10 * MIN, 5 * MIN, MIN];
const TICKS = [1000, 5000, 10_000, 30_000, MIN, 5 * MIN, 10 * MIN, 30 * MIN, HOUR, 3 * HOUR];
const DRAG_PX = 4;

export function zoomLabel(span) {
  return span >= HOUR ? `${span / HOUR} h` : `${span / MIN} min`;
}

export class Timeline {
  // handlers: play(t), select(start, end), hover(text), view(start, end) after each redraw;
  // signal: removes the listeners when aborted
  constructor(root, handlers, signal) {
    this.root = root;
    this.handlers = handlers;
    this.footage = root.querySelector(".lane-footage");
    this.marks = root.querySelector(".lane-marks");
    this.heat = root.querySelector(".lane-activity");
    this.activity = null;     // {start, step (ms), level: [...], kbps: [...], threshold}
    this.axis = root.querySelector(".lane-axis");
    this.selectionBox = root.querySelector(".tl-selection");
    this.nowLine = root.querySelector(".tl-now");
    this.playheadLine = root.querySelector(".tl-playhead");
    this.day = null;          // {start, end, covered, gaps, holds, incidents, annotations}: times in ms
    this.view = [0, 0];
    this.zoom = 0;
    this.playhead = null;
    this.selection = null;
    this.lastRenderMs = null;
    this.pressed = null;
    root.addEventListener("mousedown", (e) => this.down(e), { signal });
    window.addEventListener("mousemove", (e) => this.move(e), { signal });
    window.addEventListener("mouseup", (e) => this.up(e), { signal });
    root.addEventListener("mousemove", (e) => this.hover(e), { signal });
    root.addEventListener("wheel", (e) => this.wheel(e), { passive: false, signal });
  }

  setDay(day) {
    this.day = day;
    this.setView(this.view[0] >= day.start && this.view[1] <= day.end ? (this.view[0] + this.view[1]) / 2
                                                                       : day.start + ZOOMS[this.zoom] / 2);
  }

  // centre the view on `centre` at zoom level `zoom` (an index into ZOOMS), inside the day
  setView(centre, zoom = this.zoom) {
    this.zoom = Math.max(0, Math.min(ZOOMS.length - 1, zoom));
    const span = ZOOMS[this.zoom];
    const start = Math.max(this.day.start, Math.min(this.day.end - span, centre - span / 2));
    this.view = [start, start + span];
    this.render();
  }

  zoomBy(steps, around) {
    const [a, b] = this.view;
    const anchor = around ?? (this.playhead != null && this.playhead >= a && this.playhead <= b
      ? this.playhead : (a + b) / 2);
    const zoom = Math.max(0, Math.min(ZOOMS.length - 1, this.zoom + steps));
    const frac = (anchor - a) / (b - a);
    const span = ZOOMS[zoom];
    this.setView(anchor - frac * span + span / 2, zoom);
  }

  pan(fraction) {
    const [a, b] = this.view;
    this.setView((a + b) / 2 + fraction * (b - a));
  }

  x(t) {
    const [a, b] = this.view;
    return ((t - a) / (b - a)) * 100;
  }

  timeAt(clientX) {
    const box = this.root.getBoundingClientRect();
    const [a, b] = this.view;
    const f = Math.max(0, Math.min(1, (clientX - box.left) / box.width));
    return Math.round(a + f * (b - a));
  }

  // a positioned bar for [start, end) clipped to the view, or null when outside it
  bar(className, start, end, props) {
    const [a, b] = this.view;
    if (end <= a || start >= b) return null;
    const left = this.x(Math.max(start, a));
    const right = this.x(Math.min(end, b));
    const node = el("div", { className, ...props });
    node.style.left = `${left}%`;
    node.style.width = `${right - left}%`;
    return node;
  }

  render() {
    const t0 = performance.now();
    const day = this.day;
    const [a, b] = this.view;
    const footage = document.createDocumentFragment();
    for (const c of day.covered) {
      const node = this.bar("tl-covered", c.start, c.end, { dataset: { start: c.start, end: c.end } });
      if (node) footage.append(node);
    }
    for (const g of day.gaps) {
      const what = `${g.reason}${g.detail ? ": " + g.detail : ""} (${clockText(g.start)}–${clockText(g.end)}, ` +
                   `${spanText(g.start, g.end)})`;
      const node = this.bar(`tl-gap gap-${g.reason}`, g.start, g.end,
                            { title: what, dataset: { reason: g.reason, start: g.start, end: g.end } });
      if (node) footage.append(node);
    }
    this.footage.replaceChildren(footage);

    const marks = document.createDocumentFragment();
    for (const h of day.holds) {
      const title = h.kind === "incident" ? `held by incident #${h.incident}` : `held by export ${h.export}`;
      const node = this.bar(`tl-hold hold-${h.kind}`, h.start, h.end, { title, dataset: { kind: h.kind } });
      if (node) marks.append(node);
    }
    for (const i of day.incidents) {
      const node = this.bar("tl-incident", i.start, Math.max(i.end, i.start + (b - a) / 400),
                            { title: `incident #${i.id}: ${i.title}`, dataset: { incident: i.id } });
      if (node) marks.append(node);
    }
    for (const n of day.annotations) {
      const node = this.bar(`tl-annotation kind-${n.kind}`, n.start, Math.max(n.end, n.start + (b - a) / 400),
                            { title: `${n.kind}: ${n.text}`, dataset: { annotation: n.id } });
      if (node) marks.append(node);
    }
    this.marks.replaceChildren(marks);

    const span = b - a;
    const step = TICKS.find((s) => span / s <= 12) || TICKS[TICKS.length - 1];
    const offset = new Date(a).getTimezoneOffset() * MIN;       // ticks on local round times
    const ticks = document.createDocumentFragment();
    for (let t = Math.ceil((a - offset) / step) * step + offset; t <= b; t += step) {
      const tick = el("span", { className: "tick", textContent: clockText(t).slice(0, step < MIN ? 8 : 5) });
      tick.style.left = `${this.x(t)}%`;
      ticks.append(tick);
    }
    this.axis.replaceChildren(ticks);
    this.place(this.nowLine, Date.now());
    this.place(this.playheadLine, this.playhead);
    this.drawSelection();
    this.drawHeat();
    this.lastRenderMs = performance.now() - t0;
    this.root.dataset.view = `${a},${b}`;           // what is shown, for tests and bookmarks
    if (this.handlers.view) this.handlers.view(a, b);

  }

  setActivity(activity) {
    this.activity = activity;
    this.drawHeat();
  }

  // one cell per step whose activity level rose above half the threshold, stronger as it rises
  drawHeat() {
    const act = this.activity;
    const cells = document.createDocumentFragment();
    if (act) {
      act.level.forEach((level, i) => {
        if (level == null || level < act.threshold / 2) return;
        const a = act.start + i * act.step;
        const kbps = act.kbps[i] == null ? "" : `, ${Math.round(act.kbps[i])} kbit/s`;
        const cell = this.bar("tl-heat", a, a + act.step, {
          title: `activity ${level.toFixed(1)} (active above ${act.threshold})${kbps}, ${clockText(a)}` });
        if (!cell) return;
        cell.style.opacity = String(Math.min(1, 0.25 + level / (2 * act.threshold)));
        cells.append(cell);
      });
    }
    this.heat.replaceChildren(cells);
  }

  place(line, t) {
    const inside = t != null && t >= this.view[0] && t <= this.view[1];
    line.hidden = !inside;
    if (inside) line.style.left = `${this.x(t)}%`;
  }

  setPlayhead(t) {
    this.playhead = t;
    this.place(this.playheadLine, t);
  }

  setSelection(range) {
    this.selection = range;
    this.drawSelection();
  }

  drawSelection() {
    const s = this.selection;
    const box = this.selectionBox;
    if (!s || s[1] <= this.view[0] || s[0] >= this.view[1]) {
      box.hidden = true;
      return;
    }
    const left = this.x(Math.max(s[0], this.view[0]));
    box.hidden = false;
    box.style.left = `${left}%`;
    box.style.width = `${this.x(Math.min(s[1], this.view[1])) - left}%`;
  }

  // what is at instant t: "recorded", a gap's reason and words, or nothing known
  describe(t) {
    const day = this.day;
    if (!day) return "";
    if (t > Date.now()) return "the future";
    const gap = day.gaps.find((g) => t >= g.start && t < g.end);
    if (gap) return `gap: ${gap.reason}${gap.detail ? " (" + gap.detail + ")" : ""}`;
    if (day.covered.some((c) => t >= c.start && t < c.end)) return "recorded";
    return "no footage";
  }

  down(e) {
    if (e.button !== 0 || !this.day) return;
    e.preventDefault();
    this.root.focus();
    this.pressed = { x: e.clientX, t: this.timeAt(e.clientX), dragging: false };
  }

  move(e) {
    const p = this.pressed;
    if (!p) return;
    if (!p.dragging && Math.abs(e.clientX - p.x) >= DRAG_PX) p.dragging = true;
    if (p.dragging) {
      const t = this.timeAt(e.clientX);
      this.setSelection([Math.min(p.t, t), Math.max(p.t, t)]);
    }
  }

  up(e) {
    const p = this.pressed;
    if (!p) return;
    this.pressed = null;
    if (p.dragging) {
      const t = this.timeAt(e.clientX);
      const range = [Math.min(p.t, t), Math.max(p.t, t)];
      this.setSelection(range);
      this.handlers.select(range[0], range[1]);
    } else {
      this.handlers.play(p.t);
    }
  }

  hover(e) {
    if (!this.day) return;
    const t = this.timeAt(e.clientX);
    this.handlers.hover(`${clockText(t)}: ${this.describe(t)}`, t);
  }

  wheel(e) {
    if (!this.day) return;
    e.preventDefault();
    if (e.shiftKey || Math.abs(e.deltaX) > Math.abs(e.deltaY)) {
      this.pan(Math.sign(e.deltaX || e.deltaY) * 0.1);
    } else {
      this.zoomBy(e.deltaY < 0 ? 1 : -1, this.timeAt(e.clientX));
    }
  }
}
