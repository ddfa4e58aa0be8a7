"""hls.js in a real browser plays the hub's HLS playlists (issue 5).

Debian's `chromium` (headless) driven by Selenium through Debian's `chromedriver` (never Selenium
Manager, which would download one), hls.js at the version pinned in tests/player/package.json
(installed from the npm registry by scripts/setup.sh), and the page tests/player/ served by this
module on 127.0.0.1. The page fetches the playlist and the media from the hub's origin (CORS) and
follows the hub's 307s to presigned URLs on the S3 server (a third origin). Only loopback traffic:
chromium resolves no name but 127.0.0.1.

The page records every video and hls.js event, every hls.js error, and every frame presented
(`requestVideoFrameCallback`) with its wall-clock time by hls.js's fragments (EXT-X-PROGRAM-DATE-TIME);
a failure message carries that log.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import itertools
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Footage

from shared.timeutil import iso_to_us, us_to_iso
from tools.processes import free_port

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
PLAYER_DIR = Path(__file__).resolve().parent / "player"
HLS_JS = PLAYER_DIR / "node_modules" / "hls.js" / "dist" / "hls.min.js"
FPS = 15
GOP_S = 2.0
SETUP_HINT = "run `bash scripts/setup.sh` (installs chromium, chromium-driver and the pinned hls.js)"


# -- the page server and the browser ---------------------------------------------------------------

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def page_url() -> Iterator[str]:
    """tests/player/ (the page and node_modules/hls.js) over HTTP on a free loopback port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()),
                                             functools.partial(_QuietHandler, directory=str(PLAYER_DIR)))
    thread = threading.Thread(target=server.serve_forever, name="player-page", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _pinned_hls_version() -> str:
    return json.loads((PLAYER_DIR / "package.json").read_text())["dependencies"]["hls.js"]


def _check_prerequisites() -> None:
    """Fail (never skip): CI runs this after scripts/setup.sh, which installs all of it."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"browser test: {', '.join(missing)} not installed; {SETUP_HINT}", pytrace=False)
    pinned = _pinned_hls_version()
    try:
        installed = json.loads((HLS_JS.parents[1] / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        installed = None
    if installed != pinned or not HLS_JS.is_file():
        pytest.fail(f"browser test: hls.js {pinned} is not in {HLS_JS.parents[2]} (found {installed}); {SETUP_HINT}",
                    pytrace=False)


def _our_pids(marker: str) -> list[int]:
    """PIDs of the processes whose command line holds `marker` (our unique profile directory)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline:
            pids.append(int(entry.name))
    return pids


class Page:
    """The player page in one browser tab: `window.vigil` (tests/player/player.js)."""

    def __init__(self, driver: Any, url: str) -> None:
        self.driver = driver
        self.url = url

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def snapshot(self) -> dict[str, Any]:
        return self.js("return vigil.snapshot()")

    def state(self) -> dict[str, Any]:
        return self.js("return vigil.state")

    def load(self, playlist_url: str, **opts: Any) -> None:
        self.js("vigil.load(arguments[0], arguments[1])", playlist_url, opts)

    def dump(self) -> str:
        """What the page saw, for a failure message: snapshot, hls.js errors, the event log, the console."""
        try:
            state = self.state()
            parts = [f"snapshot: {json.dumps(self.snapshot())}",
                     f"hls.js errors: {json.dumps(state['errors'], indent=None)}",
                     "event log:"] + [f"  {json.dumps(e, sort_keys=True)}" for e in state["log"][-200:]]
            if state.get("manifest"):
                parts.append("fragments: " + json.dumps(state["manifest"]["fragments"]))
        except Exception as exc:  # the page itself broke: say so, still show the console
            parts = [f"(page state unavailable: {exc!r})"]
        try:
            parts += ["browser console:"] + [f"  {e.get('level')} {e.get('message')}"
                                             for e in self.driver.get_log("browser")[-50:]]
        except Exception:
            pass
        return "\n".join(parts)

    def check(self, ok: Any, message: str) -> None:
        if not ok:
            raise AssertionError(f"{message}\n--- page ---\n{self.dump()}")

    def wait(self, what: str, script: str, timeout: float, *args: Any) -> Any:
        """Poll `script` (JS returning a value) until truthy; fail with the page's log, also on a fatal
        hls.js error."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(script, *args)
            if value:
                return value
            fatal = self.js("return window.vigil ? vigil.state.errors.filter(e => e.fatal) : []")
            self.check(not fatal, f"fatal hls.js error while waiting for {what}: {fatal}")
            self.check(time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def page(page_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    """One headless chromium for the module, quit by its driver at the end (and no process of it left)."""
    _check_prerequisites()
    profile = tempfile.mkdtemp(prefix="vigil-chromium-", dir=tmp_path_factory.getbasetemp())
    driver = start_chromium(profile)
    try:
        driver.set_script_timeout(30)
        driver.get(page_url)
        p = Page(driver, page_url)
        p.wait("the page (hls.js) to load", "return !!(window.vigil && window.Hls)", 15)
        version = p.js("return vigil.version")
        assert version == _pinned_hls_version(), f"the page runs hls.js {version}, package.json pins another"
        supported = p.js("return vigil.supported()")
        assert supported == {"hls": True, "h264": True}, f"chromium cannot play H.264 fMP4 over MSE: {supported}"
        yield p
    finally:
        try:
            driver.quit()
        finally:
            _reap(profile)


@contextlib.contextmanager
def chromium_session(base: Path) -> Iterator[Any]:
    """Debian's chromium (failing, never skipping, when it is not installed) with a fresh profile in
    `base`; quit and reaped (no process of it left) on leaving."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.is_file()]
    if missing:
        pytest.fail(f"browser test: {', '.join(missing)} not installed; {SETUP_HINT}", pytrace=False)
    profile = tempfile.mkdtemp(prefix="vigil-chromium-", dir=base)
    driver = start_chromium(profile)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            _reap(profile)


def start_chromium(profile: str) -> Any:
    """Headless chromium with its own profile dir, through Debian's chromedriver; quit it with
    `driver.quit()`, then `_reap(profile)`."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--autoplay-policy=no-user-gesture-required", "--mute-audio", f"--user-data-dir={profile}",
                "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps", "--disable-extensions",
                "--no-proxy-server", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
                "--window-size=640,480"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(Path(profile).parent / "chromedriver.log"))
    try:
        return webdriver.Chrome(options=options, service=service)
    except Exception as exc:
        _reap(profile)
        log = Path(profile).parent / "chromedriver.log"
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        pytest.fail(f"browser test: chromium did not start through {CHROMEDRIVER}: {exc}\n{tail}", pytrace=False)


def _reap(profile: str) -> None:
    """Wait for the browser's processes to go; kill those left (ours: their command line names our
    own profile directory) by PID, never by name."""
    try:
        deadline = time.monotonic() + 10
        while _our_pids(profile) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in _our_pids(profile):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        shutil.rmtree(profile, ignore_errors=True)


# -- the hub side ----------------------------------------------------------------------------------

def playback_url(footage: Footage, start_us: int, end_us: int) -> str:
    """An absolute playlist URL carrying a playback token (no header needed)."""
    status, grant = footage.hub.api("POST", "/api/v1/playback-tokens", {
        "camera": footage.camera, "start": us_to_iso(start_us), "end": us_to_iso(end_us)}, role="viewer")
    assert status == 201, (status, grant)
    return footage.hub.url + grant["playlist_url"]


def playlist_entries(url: str) -> list[dict[str, Any]]:
    """The playlist as the hub wrote it: per media entry its wall-clock start (from the last
    EXT-X-PROGRAM-DATE-TIME plus the EXTINFs since), its start on a VOD timeline (sum of EXTINFs),
    duration, discontinuity count and file."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    entries: list[dict[str, Any]] = []
    pdt_us = None
    media = 0.0
    cc = 0
    duration = 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
            pdt_us = iso_to_us(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-DISCONTINUITY"):
            cc += 1
        elif line.startswith("#EXTINF:"):
            duration = float(line.split(":", 1)[1].split(",")[0])
        elif line and not line.startswith("#"):
            assert pdt_us is not None, f"a media entry before any EXT-X-PROGRAM-DATE-TIME:\n{text}"
            entries.append({"wall_us": pdt_us, "media": media, "duration": duration, "cc": cc,
                            "file": re.sub(r"\?.*$", "", line)})
            pdt_us += round(duration * 1e6)
            media += duration
    assert entries and text.rstrip().endswith("#EXT-X-ENDLIST"), f"not a VOD playlist:\n{text}"
    return entries


def media_time_at(entries: list[dict[str, Any]], wall_us: int) -> float:
    """Where the playlist puts wall-clock `wall_us` on the player's timeline."""
    for e in entries:
        if e["wall_us"] <= wall_us < e["wall_us"] + e["duration"] * 1e6:
            return e["media"] + (wall_us - e["wall_us"]) / 1e6
    raise AssertionError(f"{us_to_iso(wall_us)} is in no playlist entry")


def iso_ms(ms: float | None) -> str:
    return "None" if ms is None else us_to_iso(int(ms * 1000))


# -- the tests -------------------------------------------------------------------------------------

def test_hlsjs_plays_the_whole_range_across_files_and_the_gap(page: Page, footage: Footage) -> None:
    """Every frame of both runs decodes, in wall-clock order, through every file boundary and the
    camera outage (an EXT-X-DISCONTINUITY); the clock shown jumps the gap; `ended` fires."""
    segments = footage.segments
    outage_start, outage_end = footage.outage
    url = playback_url(footage, footage.start_us, footage.end_us)
    entries = playlist_entries(url)
    assert entries[-1]["cc"] >= 1, f"no EXT-X-DISCONTINUITY at the outage: {entries}"
    duration = sum(s["duration_s"] for s in segments)
    expected_frames = sum(round(s["duration_s"] * FPS) for s in segments)

    rate = 2.0
    page.load(url, rate=rate, autoplay=True)
    page.wait("the end of the footage (`ended`)", "return vigil.state.ended", timeout=20 + duration / rate)
    snap = page.snapshot()
    state = page.state()

    page.check(not any(e["fatal"] for e in state["errors"]), "fatal hls.js error")
    page.check(abs(snap["duration"] - duration) < 0.2 and abs(snap["ct"] - duration) < 0.2,
               f"the video ends at {snap['ct']} s of {snap['duration']} s; the footage has {duration:.3f} s")
    page.check(len(snap["buffered"]) == 1, f"the buffer has holes: {snap['buffered']}")
    decoded = snap["decoded"]["total"]
    page.check(abs(decoded - expected_frames) <= 2,
               f"{decoded} frames decoded, the footage has {expected_frames} ({FPS} fps x {duration:.3f} s)")

    # frames presented: in wall-clock order, inside the footage, every file shown, one jump (the outage)
    frames = [f for f in state["frames"] if f["wall"] is not None]
    page.check(len(frames) >= 0.5 * expected_frames, f"only {len(frames)} of {expected_frames} frames presented")
    walls_us = [round(f["wall"] * 1000) for f in frames]
    backwards = [(a, b) for a, b in itertools.pairwise(walls_us) if b <= a]
    page.check(not backwards, f"the clock went backwards between frames: {backwards[:5]}")
    tolerance_us = 1_000_000 // FPS
    inside = [w for w in walls_us if any(iso_to_us(s["start"]) - tolerance_us <= w <= iso_to_us(s["end"])
                                         for s in segments)]
    page.check(len(inside) == len(walls_us), f"{len(walls_us) - len(inside)} frames shown outside the footage")
    per_file = {s["id"]: 0 for s in segments}
    for w in walls_us:  # each frame to the last file starting at or before it
        per_file[[s["id"] for s in segments if iso_to_us(s["start"]) - tolerance_us <= w][-1]] += 1
    unseen = [s["id"] for s in segments if s["duration_s"] >= 1.0 and not per_file[s["id"]]]
    page.check(not unseen, f"no frame of {unseen} was presented; frames per file: {per_file}")
    jumps = [(a, b) for a, b in itertools.pairwise(walls_us) if b - a > 1_500_000]
    pdt_us = 1000  # EXT-X-PROGRAM-DATE-TIME has millisecond precision: the page's clock is that coarse
    page.check(len(jumps) == 1 and jumps[0][0] <= outage_start + pdt_us and jumps[0][1] >= outage_end - pdt_us,
               f"the clock should jump once, over the outage {us_to_iso(outage_start)}..{us_to_iso(outage_end)}: "
               f"{[(us_to_iso(a), us_to_iso(b)) for a, b in jumps]}")

    # hls.playingDate, as a UI would show it, crosses from before the gap to after it
    dates = [s["date"] for s in state["samples"] if s["date"] is not None]
    page.check(dates and min(dates) * 1000 < outage_start and max(dates) * 1000 >= outage_end,
               f"hls.playingDate never crossed the outage: {iso_ms(min(dates, default=None))}.."
               f"{iso_ms(max(dates, default=None))}")
    page.check(all(b >= a for a, b in itertools.pairwise(dates)), f"hls.playingDate went backwards: {dates}")
    page.check(min(dates) * 1000 - footage.start_us < 1_000_000 and footage.end_us - max(dates) * 1000 < 1_000_000,
               f"hls.playingDate spans {iso_ms(min(dates))}..{iso_ms(max(dates))}, the footage "
               f"{us_to_iso(footage.start_us)}..{us_to_iso(footage.end_us)}")
    print(f"played {duration:.3f} s at {rate}x: {decoded} frames decoded of {expected_frames}, "
          f"{len(frames)} presented, frames per file {per_file}")


def _seek_targets(footage: Footage) -> tuple[int, int]:
    """A mid-GOP instant in a 4-s file of run 1 (its second fragment) and one in a 4-s file of run 2."""
    outage_start, outage_end = footage.outage
    full = [s for s in footage.segments if s["duration_s"] >= 2 * GOP_S - 0.01]
    run1 = [s for s in full if iso_to_us(s["end"]) <= outage_start]
    run2 = [s for s in full if iso_to_us(s["start"]) >= outage_end]
    assert run1 and run2, f"the footage needs a full file on both sides of the outage: {footage.segments}"
    return iso_to_us(run1[-1]["start"]) + 3_100_000, iso_to_us(run2[0]["start"]) + 3_100_000


def test_hlsjs_seeks_by_wall_clock_within_one_gop(page: Page, footage: Footage) -> None:
    """In a range that starts mid-file, seeking to an instant in run 1 and one past the outage in
    run 2 shows a frame within one GOP of it, and playback goes on from there."""
    target1, target2 = _seek_targets(footage)
    first_full = next(s for s in footage.segments if s["duration_s"] >= 2 * GOP_S - 0.01)
    start_us = iso_to_us(first_full["start"]) + 2_500_000   # inside the file's second fragment
    url = playback_url(footage, start_us, footage.end_us)
    entries = playlist_entries(url)
    assert entries[0]["wall_us"] <= start_us < entries[0]["wall_us"] + entries[0]["duration"] * 1e6, (
        f"the playlist does not start at the fragment holding {us_to_iso(start_us)}: {entries[0]}")

    # a small buffer, so that a seek has to fetch its fragment
    page.load(url, rate=1, autoplay=False, config={"maxBufferLength": 2, "maxMaxBufferLength": 4})
    page.wait("the playlist to be parsed", "return vigil.state.manifest", 15)
    page.wait("the first frame", "return vigil.state.frames.length > 0", 15)

    results = []
    for target in (target2, target1):  # forward over the outage, then back over it
        seeks = len(page.state()["seeks"])
        chosen = page.js("return vigil.seekToDate(arguments[0])", target / 1000)
        page.check(chosen is not None, f"the page found no fragment for {us_to_iso(target)}")
        expected_time = media_time_at(entries, target)
        page.check(abs(chosen - expected_time) < 0.1,
                   f"hls.js puts {us_to_iso(target)} at {chosen:.3f} s, the playlist at {expected_time:.3f} s")
        page.wait(f"`seeked` at {us_to_iso(target)}", "const s = vigil.state.seeks[arguments[0]]; return !!s.seekedAt",
                  15, seeks)
        # playback goes on from there: the first frame presented is the frame on screen at the target
        page.js("vigil.play()")
        page.wait(f"a frame after seeking to {us_to_iso(target)}", "return !!vigil.state.seeks[arguments[0]].frame",
                  10, seeks)
        seek = page.state()["seeks"][seeks]
        shown_ms = seek["frame"]["wall"]
        page.check(shown_ms is not None and abs(shown_ms * 1000 - target) <= GOP_S * 1e6,
                   f"seeking to {us_to_iso(target)} shows the frame of {iso_ms(shown_ms)} "
                   f"(more than one GOP, {GOP_S} s, away): {seek}")
        page.wait("playback after the seek", "return vigil.snapshot().ct >= arguments[0] + 0.5", 10, chosen)
        page.js("vigil.pause()")
        snap = page.snapshot()
        date_ms = snap["date"]  # the clock a UI shows
        want_ms = target / 1000 + (snap["ct"] - chosen) * 1000
        page.check(date_ms is not None and abs(date_ms - want_ms) <= GOP_S * 1000,
                   f"after seeking to {us_to_iso(target)} and playing {snap['ct'] - chosen:.2f} s, hls.playingDate "
                   f"is {iso_ms(date_ms)}, expected {iso_ms(want_ms)}")
        results.append((us_to_iso(target), round(shown_ms / 1000 - target / 1e6, 3),
                        round((date_ms - want_ms) / 1000, 3)))
    state = page.state()
    page.check(not any(e["fatal"] for e in state["errors"]), "fatal hls.js error")
    print(f"seeks (target, frame shown - target s, playingDate - expected s): {results}")
