// Plays a camera from a wall-clock instant with hls.js, one window of at most an hour at a time
// (a playlist is never longer than the footage it shows: a 24-h playlist is megabytes), chained
// window after window across gaps and days; the wall-clock time of the frame on screen comes
// from the fragment list's program date-times, never from hls.js's playingDate (which names the
// previous fragment for a while after a seek).

import { API, api, iso, ms } from "./api.js";

const WINDOW_MS = 3600_000;
const LOOK_AHEAD_MS = 86_400_000;   // how far after an instant the next footage is looked for
const WAIT_MS = 2000;               // while the camera records: how often to look for newer footage

let hlsModule = null;
async function loadHls() {
  if (!hlsModule) hlsModule = (await import("./hls.mjs")).default;
  return hlsModule;
}

export class Player {
  // handlers: time(wallMs) on every frame, status(text), stopped(reason); signal: removes the
  // listeners on the video element when aborted
  constructor(video, camera, handlers, signal) {
    this.video = video;
    this.camera = camera;
    this.handlers = handlers;
    this.hls = null;
    this.generation = 0;
    this.fragments = [];
    this.window = null;       // {start, end, until}: the playlist's range (ms) and where to stop
    this.rate = 1;
    this.waitTimer = null;
    this.errors = [];         // hls.js errors, for the status line and the tests
    this.lastWall = null;
    video.addEventListener("ended", () => this.next(), { signal });
    for (const name of ["play", "pause", "playing"]) video.addEventListener(name, () => this.status(), { signal });
    video.addEventListener("waiting", () => this.handlers.status("buffering…"), { signal });
    const onFrame = (_now, meta) => {
      const wall = this.wallAt(meta.mediaTime);
      if (wall != null) {
        this.lastWall = wall;
        this.handlers.time(wall);
      }
      this.frameCallback = video.requestVideoFrameCallback(onFrame);
    };
    this.frameCallback = video.requestVideoFrameCallback(onFrame);
  }

  status(text) {
    if (text) return this.handlers.status(text);
    const v = this.video;
    this.handlers.status(v.paused ? "paused" : `playing ${this.rate}×`);
  }

  // wall-clock ms of media time t: by the fragment holding it
  wallAt(t) {
    const frags = this.fragments;
    let lo = 0;
    let hi = frags.length - 1;
    if (hi < 0) return null;
    while (lo < hi) {                         // the last fragment starting at or before t
      const mid = (lo + hi + 1) >> 1;
      if (frags[mid].start <= t + 0.001) lo = mid; else hi = mid - 1;
    }
    const f = frags[lo];
    return f.programDateTime == null ? null : f.programDateTime + Math.max(0, t - f.start) * 1000;
  }

  // media time of wall-clock instant t in the loaded playlist (null: not in it)
  mediaAt(t) {
    for (const f of this.fragments) {
      if (f.programDateTime != null && t >= f.programDateTime && t < f.programDateTime + f.duration * 1000) {
        return f.start + (t - f.programDateTime) / 1000;
      }
    }
    const first = this.fragments[0];
    return first && first.programDateTime != null && t < first.programDateTime ? first.start : null;
  }

  setRate(rate) {
    this.rate = rate;
    this.video.defaultPlaybackRate = rate;
    this.video.playbackRate = rate;
    this.status();
  }

  toggle() {
    if (!this.window) return false;
    if (this.video.paused) this.video.play().catch(() => {});
    else this.video.pause();
    return true;
  }

  stop() {
    this.generation += 1;
    clearTimeout(this.waitTimer);
    if (this.hls) this.hls.destroy();
    this.hls = null;
    this.fragments = [];
    this.window = null;
  }

  destroy() {
    this.stop();
    this.video.cancelVideoFrameCallback(this.frameCallback);
    this.video.removeAttribute("src");
    this.video.load();
  }

  // play from wall-clock instant t (the next footage after it, when t is in a gap), until `until`
  // (ms, or null: on and on, window after window)
  async playFrom(t, until = null) {
    this.stop();
    const mine = this.generation;
    this.status("loading…");
    let Hls;
    try {
      Hls = await loadHls();
    } catch (err) {
      this.handlers.stopped(`the player is not installed on this hub (${err.message}): run scripts/setup.sh`);
      return;
    }
    const cam = encodeURIComponent(this.camera);
    let found;
    let camera;
    try {
      [found, camera] = await Promise.all([
        api("GET", `/cameras/${cam}/segments?start=${iso(t)}&end=${iso(t + LOOK_AHEAD_MS)}&limit=1`),
        api("GET", `/cameras/${cam}`)]);
    } catch (err) {
      if (mine === this.generation) this.handlers.stopped(`could not look up footage: ${err.message}`);
      return;
    }
    if (mine !== this.generation) return;
    const seg = found.segments[0];
    if (!seg || (until != null && ms(seg.start) >= until)) {
      if (camera.state === "recording" && until == null && t >= ms(camera.stored_until || iso(0)) - 1000) {
        this.status("waiting for new footage…");
        this.waitTimer = setTimeout(() => { if (mine === this.generation) this.playFrom(t, until); }, WAIT_MS);
      } else {
        this.handlers.stopped(until != null ? "end of the selection" : "no more footage");
      }
      return;
    }
    const begin = Math.max(t, ms(seg.start));
    let end = Math.min(begin + WINDOW_MS, ms(camera.stored_until));
    if (until != null) end = Math.min(end, until);
    if (end <= begin) end = Math.min(ms(seg.end), until ?? Infinity);
    this.window = { start: begin, end, until };
    this.errors = [];
    const hls = new Hls({ enableWorker: false, autoStartLoad: false, maxBufferLength: 30, startFragPrefetch: true });
    this.hls = hls;
    let started = false;
    hls.on(Hls.Events.LEVEL_LOADED, (_e, data) => {
      if (mine !== this.generation) return;
      this.fragments = data.details.fragments;
      if (started) return;
      started = true;
      const pos = this.mediaAt(begin) ?? 0;
      hls.startLoad(pos);
      this.video.currentTime = pos;
      this.video.defaultPlaybackRate = this.rate;
      this.video.playbackRate = this.rate;
      this.video.play().catch(() => {});
    });
    hls.on(Hls.Events.ERROR, (_e, data) => {
      if (mine !== this.generation) return;
      this.errors.push({ fatal: !!data.fatal, type: data.type, details: data.details });
      if (!data.fatal) return;
      if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
      } else {
        this.handlers.stopped(`playback failed: ${data.details}`);
        this.stop();
      }
    });
    hls.loadSource(`${API}/cameras/${cam}/playlist.m3u8?start=${iso(begin)}&end=${iso(end)}`);
    hls.attachMedia(this.video);
  }

  // the window played to its end: on to the next footage after it
  next() {
    const w = this.window;
    if (!w) return;
    if (w.until != null && w.end >= w.until) {
      this.handlers.stopped("end of the selection");
      return;
    }
    this.playFrom(w.end, w.until);
  }
}
