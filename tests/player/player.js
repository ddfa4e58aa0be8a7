"use strict";
// The page tests/test_player_browser.py drives through `window.vigil`: plays one HLS URL with hls.js
// and records what happened (video and hls.js events, errors, every frame presented, its wall time).

(function () {
  const video = document.getElementById("video");
  const t0 = performance.now();
  const now = () => Math.round(performance.now() - t0) / 1000;
  const MAX_LOG = 3000;

  const state = {
    log: [],          // {t, kind, ...}: video and hls.js events, in order
    errors: [],       // every hls.js ERROR event (fatal or not)
    frames: [],       // {t, media, wall}: every frame presented (requestVideoFrameCallback)
    samples: [],      // {t, ct, date, decoded}: on every timeupdate
    seeks: [],        // {target, time, seekedAt, frame}: one per seekToDate(); frame: the first presented after `seeked`
    ended: false,
    manifest: null,   // fragment list once the playlist is parsed
  };
  let hls = null;
  let generation = 0;

  function log(kind, extra) {
    if (state.log.length < MAX_LOG) {
      state.log.push(Object.assign({ t: now(), kind: kind, ct: round(video.currentTime) }, extra || {}));
    }
  }
  function round(x) { return typeof x === "number" ? Math.round(x * 1000) / 1000 : x; }
  function iso(ms) { return ms == null ? null : new Date(ms).toISOString(); }
  function decoded() {
    const q = video.getVideoPlaybackQuality ? video.getVideoPlaybackQuality() : null;
    return q ? { total: q.totalVideoFrames, dropped: q.droppedVideoFrames } : null;
  }
  function fragments() {
    const details = hls && (hls.latestLevelDetails || (hls.levels[0] && hls.levels[0].details));
    return details ? details.fragments : [];
  }
  // wall clock (ms since the epoch) of media time `t`, by the fragment holding it (hls.js's own mapping)
  function wallAt(t) {
    const frags = fragments();
    for (let i = 0; i < frags.length; i++) {
      const f = frags[i];
      const last = i === frags.length - 1;
      if (f.programDateTime != null && t >= f.start - 0.001 && (t < f.start + f.duration || last)) {
        return f.programDateTime + (t - f.start) * 1000;
      }
    }
    return null;
  }
  function describe(f) {
    return { sn: f.sn, cc: f.cc, start: round(f.start), duration: round(f.duration), pdt: f.programDateTime,
             url: String(f.url).replace(/\?.*$/, ""), byteRange: f.byteRange };
  }

  ["loadedmetadata", "canplay", "play", "playing", "waiting", "stalled", "pause", "seeking", "seeked",
   "ratechange", "emptied"].forEach(function (name) {
    video.addEventListener(name, function () { log("video." + name, { date: iso(hls && hls.playingDate) }); });
  });
  video.addEventListener("ended", function () { state.ended = true; log("video.ended", { decoded: decoded() }); });
  video.addEventListener("error", function () {
    const e = video.error;
    log("video.error", { code: e && e.code, message: e && e.message });
  });
  video.addEventListener("timeupdate", function () {
    const d = hls && hls.playingDate;
    state.samples.push({ t: now(), ct: round(video.currentTime), date: d ? d.getTime() : null, decoded: decoded() });
  });
  video.addEventListener("seeked", function () {
    const s = state.seeks[state.seeks.length - 1];
    if (s && s.seekedAt == null) {
      s.seekedAt = { t: now(), ct: round(video.currentTime), date: hls && hls.playingDate ? hls.playingDate.getTime() : null };
    }
  });

  function onFrame(_now, meta) {
    const wall = wallAt(meta.mediaTime);
    if (state.frames.length < 20000) {
      state.frames.push({ t: now(), media: round(meta.mediaTime), wall: wall });
    }
    const s = state.seeks[state.seeks.length - 1];
    if (s && s.seekedAt != null && s.frame == null) {
      s.frame = { t: now(), media: round(meta.mediaTime), wall: wall };
    }
    frameCallback = video.requestVideoFrameCallback(onFrame);
  }
  let frameCallback = video.requestVideoFrameCallback(onFrame);

  window.vigil = {
    state: state,
    version: Hls.version,
    supported: function () {
      return { hls: Hls.isSupported(), h264: window.MediaSource ?
        MediaSource.isTypeSupported('video/mp4; codecs="avc1.42E01E"') : false };
    },
    // play `url` (an absolute playlist URL); rate: playbackRate; autoplay: start once parsed;
    // config: hls.js settings over the defaults below
    load: function (url, opts) {
      opts = opts || {};
      if (hls) { hls.destroy(); }
      generation += 1;
      const mine = generation;
      state.log.length = 0; state.errors.length = 0; state.frames.length = 0; state.samples.length = 0;
      state.seeks.length = 0; state.ended = false; state.manifest = null;
      video.defaultPlaybackRate = opts.rate || 1;
      video.playbackRate = opts.rate || 1;
      hls = new Hls(Object.assign({ debug: false, enableWorker: true, maxBufferLength: 60 }, opts.config || {}));
      window.hls = hls;
      hls.on(Hls.Events.ERROR, function (_e, data) {
        if (mine !== generation) { return; }
        const err = { t: now(), fatal: !!data.fatal, type: data.type, details: data.details,
                      reason: data.reason || (data.error && String(data.error)) || null,
                      url: data.frag ? String(data.frag.url).replace(/\?.*$/, "") : null,
                      status: data.response ? data.response.code : null };
        state.errors.push(err);
        log("hls.error", err);
      });
      hls.on(Hls.Events.LEVEL_LOADED, function (_e, data) {
        const d = data.details;
        state.manifest = { live: d.live, total: round(d.totalduration), fragments: d.fragments.map(describe) };
        log("hls.levelLoaded", { fragments: d.fragments.length, total: round(d.totalduration), live: d.live });
      });
      hls.on(Hls.Events.FRAG_LOADED, function (_e, data) { log("hls.fragLoaded", describe(data.frag)); });
      hls.on(Hls.Events.FRAG_CHANGED, function (_e, data) {
        log("hls.fragChanged", { sn: data.frag.sn, cc: data.frag.cc, pdt: iso(data.frag.programDateTime) });
      });
      hls.on(Hls.Events.BUFFER_EOS, function () { log("hls.bufferEos"); });
      hls.on(Hls.Events.MANIFEST_PARSED, function () {
        log("hls.manifestParsed");
        if (opts.autoplay) {
          video.play().catch(function (e) { log("video.playRejected", { message: String(e) }); });
        }
      });
      video.cancelVideoFrameCallback(frameCallback);
      frameCallback = video.requestVideoFrameCallback(onFrame);
      hls.loadSource(url);
      hls.attachMedia(video);
    },
    // seek to the media time showing wall clock `ms` (by hls.js's fragments); returns that time
    seekToDate: function (ms) {
      const frags = fragments();
      let time = null;
      for (const f of frags) {
        if (f.programDateTime == null) { continue; }
        if (ms < f.programDateTime) { time = f.start; break; }       // in a gap: the next footage
        if (ms < f.programDateTime + f.duration * 1000) { time = f.start + (ms - f.programDateTime) / 1000; break; }
      }
      if (time === null) { return null; }
      state.seeks.push({ target: ms, time: round(time), seekedAt: null, frame: null });
      log("seekToDate", { target: iso(ms), time: round(time) });
      video.currentTime = time;
      return time;
    },
    play: function () { video.play().catch(function (e) { log("video.playRejected", { message: String(e) }); }); },
    pause: function () { video.pause(); },
    snapshot: function () {
      const d = hls && hls.playingDate;
      const buffered = [];
      for (let i = 0; i < video.buffered.length; i++) {
        buffered.push([round(video.buffered.start(i)), round(video.buffered.end(i))]);
      }
      return { t: now(), ct: round(video.currentTime), duration: round(video.duration), paused: video.paused,
               ended: video.ended, readyState: video.readyState, rate: video.playbackRate,
               date: d ? d.getTime() : null, decoded: decoded(), buffered: buffered,
               frames: state.frames.length, errors: state.errors.length, seeks: state.seeks };
    },
  };
  document.getElementById("status").textContent = "hls.js " + Hls.version;
})();
