"""The hub's web page (issue 15) in a real browser: sign in with a token, the fleet view, sign out.

The hub runs in the test process (tests/hubkit.py: the real catalog and S3) behind the real
uvicorn server `vigil-hub` uses (`shared.process.start_http_server`) on a loopback port; Debian's
chromium (headless) through Debian's chromedriver, as tests/test_player_browser.py starts it.
"""

from __future__ import annotations

import gzip
import re
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hubkit import InProcessHub, seed_fake, seed_footage
from test_player_browser import chromium_session

from hub.catalog.segments import StoredSegment
from shared import activity, fragments
from shared.process import start_http_server
from shared.timeutil import now_us, us_to_iso
from tools.apps import HUB_TOKENS
from tools.processes import free_port
from tools.services import SeaweedS3

HOSTILE = '<img src=x onerror="window.pwned = 1"></td></tr><script>window.pwned = 2</script>'


@dataclass
class Served:
    url: str
    hub: InProcessHub


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, shared_s3: SeaweedS3, media: dict[str, Path]) -> Iterator[Served]:
    hub = InProcessHub(tmp_path_factory.mktemp("web") / "hub", shared_s3, nodes=("site-a", "site-b"))
    now = now_us()
    hub.catalog.update_node("site-a", state="online", last_seen_us=now, disk_free_bytes=120_000_000_000,
                            backlog_segments=3, replica={"ok": True, "lag_seconds": 2.4, "error": None})
    hub.catalog.update_node("site-b", state="offline", last_seen_us=now - 3600 * 10**6, last_error=HOSTILE,
                            replica={"ok": False, "lag_seconds": 600.0, "error": "bucket unreachable"})
    # site-a.door: real footage (its thumbnail decodes); site-a.yard: bytes that are no video
    seed_footage(hub, media["h264"], "site-a", "door", now - 600 * 10**6, 2)
    seed_fake(hub, "site-a", "yard", now - 600 * 10**6, 2, first_seq=100)
    hub.catalog.set_camera_status("site-a", "door", {"state": "recording", "since": us_to_iso(now)})
    hub.catalog.set_camera_status("site-a", "yard", {"state": "failed", "since": us_to_iso(now),
                                                     "reason": "camera_unreachable", "error": HOSTILE})
    port = free_port()
    server = start_http_server(hub.app.app(), "127.0.0.1", port)
    assert server is not None
    try:
        yield Served(f"http://127.0.0.1:{port}", hub)
    finally:
        server.should_exit = True
        hub.close()


@pytest.fixture(scope="module")
def hub_url(served: Served) -> str:
    return served.url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium_session(tmp_path_factory.getbasetemp()) as driver:
        yield driver


def _wait(driver: Any, what: str, script: str, *args: Any, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = driver.execute_script(script, *args)
        if value:
            return value
        assert time.monotonic() < deadline, (
            f"timed out waiting for {what}; timeline: {driver.execute_script('return window.vigilTimeline')}; "
            f"day load: {driver.execute_script('return window.vigilDayLoad')}; console: {driver.get_log('browser')}")
        time.sleep(0.1)


def _visible(driver: Any, element_id: str) -> bool:
    return bool(driver.execute_script(f"const e = document.getElementById('{element_id}'); "
                                      "return !!e && e.getClientRects().length > 0"))


def _sign_in(driver: Any, token: str) -> None:
    driver.execute_script("document.getElementById('token').value = arguments[0]; "
                          "document.getElementById('sign-in').requestSubmit()", token)


def test_the_page_is_served_with_strict_headers_and_hashed_assets(hub_url: str) -> None:
    with urllib.request.urlopen(hub_url + "/", timeout=10) as resp:
        html = resp.read().decode()
        headers = resp.headers
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cache-Control"] == "no-cache"
    # no inline script or style for the policy to allow: every script has a src, no on* attributes
    assert all("src=" in tag for tag in re.findall(r"<script[^>]*>", html)) and " style=" not in html
    assert not re.search(r"\son[a-z]+=", html)
    assets = re.findall(r'(?:src|href)="(/assets/[^"]+)"', html)
    assert {a.rsplit(".", 1)[-1] for a in assets} == {"js", "css"}
    versions = {re.fullmatch(r"/assets/([0-9a-f]{12})/[a-z]+\.(?:js|css)", a).group(1) for a in assets}
    assert len(versions) == 1, assets
    version = versions.pop()
    # every module the page imports, hls.js included (the light ES module build, gzipped)
    for name in ("app.js", "api.js", "camera.js", "timeline.js", "player.js", "style.css", "hls.mjs"):
        request = urllib.request.Request(f"{hub_url}/assets/{version}/{name}", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert resp.headers["Content-Security-Policy"] == csp and resp.headers["Content-Encoding"] == "gzip"
            assert gzip.decompress(resp.read())
    for stale in ("/assets/000000000000/app.js", f"/assets/{version}/nothing.js"):
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(hub_url + stale, timeout=10)
        assert err.value.code == 404


def test_sign_in_the_fleet_and_sign_out_in_a_browser(hub_url: str, browser: Any) -> None:
    browser.get(hub_url + "/")                  # a fresh profile: an empty cache
    _wait(browser, "the page to start", "return window.vigilReady === true")
    load = browser.execute_script(
        "const n = performance.getEntriesByType('navigation')[0];"
        "const all = [n, ...performance.getEntriesByType('resource')];"
        "return {ms: n.loadEventEnd, bytes: all.reduce((s, e) => s + e.transferSize, 0), files: all.length}")
    print(f"\npage load, empty cache: {load['ms']:.0f} ms, {load['bytes']} bytes in {load['files']} requests")
    assert 0 < load["ms"] < 1000 and load["bytes"] < 100_000, load
    assert _visible(browser, "sign-in") and not _visible(browser, "fleet")
    _sign_in(browser, "not-a-token-0123456789")
    error = _wait(browser, "the refusal", "return document.getElementById('sign-in-error').textContent")
    assert "not a token" in error and not _visible(browser, "fleet")
    assert browser.execute_script("return document.getElementById('token').value") == ""

    _sign_in(browser, HUB_TOKENS["viewer"])
    _wait(browser, "the fleet", "return document.querySelectorAll('#nodes tr').length === 2")
    assert browser.execute_script("return document.getElementById('who').textContent") == "viewer-desk (viewer)"
    rows = browser.execute_script(
        "return [...document.querySelectorAll('#nodes tr')].map(r => [...r.cells].map(c => c.textContent))")
    by_node = {row[0]: row for row in rows}
    assert by_node["site-a"][1] == "online" and by_node["site-a"][3] == "1 recording, 1 failed of 2"
    assert by_node["site-a"][4] == "3 segments" and by_node["site-a"][5] == "120.0 GB"
    assert by_node["site-a"][6] == "ok, lag 2 s" and by_node["site-b"][6] == "FAILING, lag 600 s: bucket unreachable"
    assert by_node["site-b"][1] == "offline" and by_node["site-b"][2] == "60 min ago"
    # a hostile text from an edge is shown as text: no element made of it, no script run
    assert by_node["site-b"][7] == HOSTILE
    assert browser.execute_script("return window.pwned === undefined && !document.querySelector('#nodes img')")
    # the cameras grid: a decoded picture for the camera with footage, "no picture" for the other,
    # the failed camera's reason (its hostile error text never turned into markup)
    door_img = "document.querySelector('[data-camera=\"site-a.door\"] img')"
    _wait(browser, "the door camera's picture", f"const i = {door_img}; return i && i.complete && i.naturalWidth > 0")
    size = browser.execute_script(f"const i = {door_img}; return [i.naturalWidth, i.naturalHeight]")
    assert size == [320, 180]
    _wait(browser, "the yard camera's 'no picture'", "return !document.querySelector("
                                                      "'[data-camera=\"site-a.yard\"] .no-image').hidden")
    yard = browser.execute_script("return [...document.querySelectorAll('[data-camera=\"site-a.yard\"] span')]"
                                  ".map(s => s.textContent)")
    assert yard == ["site-a.yard", "failed", "camera_unreachable"]
    assert browser.execute_script("return window.pwned === undefined && !document.querySelector('.tile img[src=x]')")
    # the page holds no token: none in storage, the cookie is invisible to script
    assert browser.execute_script("return localStorage.length + sessionStorage.length") == 0
    assert "vigil_session" not in browser.execute_script("return document.cookie")
    assert HUB_TOKENS["viewer"] not in browser.page_source
    cookie = browser.get_cookie("vigil_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    # a reload keeps the session; signing out ends it (the API refuses the old cookie)
    browser.refresh()
    _wait(browser, "the fleet after a reload", "return document.querySelectorAll('#nodes tr').length === 2")
    browser.execute_script("document.getElementById('sign-out').click()")
    _wait(browser, "the sign-in form", "return !document.getElementById('sign-in').hidden")
    status = browser.execute_async_script(
        "const done = arguments[0]; fetch('/api/v1/session').then(r => done(r.status))")
    assert status == 401


def _midnight_ms(browser: Any) -> int:
    """The browser's last local midnight (ms since the epoch)."""
    return int(browser.execute_script("const d = new Date(); d.setHours(0, 0, 0, 0); return d.getTime()"))


def test_a_day_of_minute_segments_renders_fast(served: Served, browser: Any) -> None:
    """Yesterday of a camera with 60-s segments, each its own run with a 3-s hole after it: 1,440
    recorded stretches and as many gaps on one 24-h timeline."""
    midnight = _midnight_ms(browser)
    day0 = (midnight - 86_400_000) * 1000
    for i in range(1440):
        a = day0 + i * 60_000_000
        served.hub.catalog.insert_segment(StoredSegment(
            "site-a", 10_000 + i, "day", 10_000 + i, a, a + 57_000_000, 1000, "0" * 64, 100, "h264", None,
            fragments.to_blob([(100, 900, a, 57_000_000)]), False, f"never-read/{i}"))
    browser.get(served.url + "/#/camera/site-a.day")
    _wait(browser, "the page to start", "return window.vigilReady === true")
    if _visible(browser, "sign-in"):
        _sign_in(browser, HUB_TOKENS["viewer"])
    _wait(browser, "today's timeline", "return window.vigilTimeline && document.getElementById('day').value")
    figures = []
    for _ in range(3):
        browser.execute_script("window.vigilTimeline = null; document.getElementById('day-prev').click()")
        day = _wait(browser, "yesterday's timeline", "return window.vigilTimeline")
        assert day["covered"] == 1440 and day["gaps"] >= 1440, day
        figures.append(day)
        browser.execute_script("document.getElementById('day-next').click()")
        _wait(browser, "today again", "return window.vigilTimeline && window.vigilTimeline.covered === 0")
    best = min(figures, key=lambda d: d["totalMs"])
    print(f"\n24-h timeline, 1,440 segments and {best['gaps']} gaps: fetch {best['fetchMs']:.0f} ms, "
          f"render {best['renderMs']:.0f} ms, total {best['totalMs']:.0f} ms "
          f"(all: {[round(d['totalMs']) for d in figures]})")
    assert best["totalMs"] < 200, figures
    bars = browser.execute_script("return document.querySelectorAll('#timeline .tl-covered').length")
    assert bars == 0          # today is shown again: nothing recorded today on this camera


def test_playback_crosses_midnight_and_steps_to_the_next_gap(served: Served, browser: Any,
                                                             media: dict[str, Path]) -> None:
    """Real footage from 10 s before the browser's midnight to 2 s after, a 5-s hole, then 8 s more:
    playing from yesterday turns the day at midnight; `]` jumps to where footage resumes."""
    midnight = _midnight_ms(browser)
    run1 = seed_footage(served.hub, media["h264"], "site-a", "mid", (midnight - 10_000) * 1000, 3,
                        run_id=7, first_seq=500)
    resume = run1[-1].end_us // 1000 + 5000
    seed_footage(served.hub, media["h264"], "site-a", "mid", resume * 1000, 2, run_id=8, first_seq=600)
    browser.get(served.url + f"/#/camera/site-a.mid?t={us_to_iso((midnight - 4000) * 1000)}")
    _wait(browser, "the page to start", "return window.vigilReady === true")
    if _visible(browser, "sign-in"):
        _sign_in(browser, HUB_TOKENS["viewer"])
    yesterday = _wait(browser, "yesterday's day", "return document.getElementById('day').value")
    start = _wait(browser, "the first frame", "return +document.getElementById('clock').dataset.ms")
    assert abs(start - (midnight - 4000)) <= 2000, (start, midnight)
    after = _wait(browser, "playback past midnight", "const t = +document.getElementById('clock').dataset.ms; "
                  "return t > arguments[0] + 500 ? t : null", midnight, timeout=20)
    # the new day's timeline is three API calls to a hub that, in the full suite, shares two cores
    # with three other test workers and their browsers: give them time
    today = _wait(browser, "the day to turn", "const d = document.getElementById('day').value; "
                  "return d !== arguments[0] ? d : null", yesterday, timeout=30)
    assert today > yesterday and after > midnight
    # `]`: to where footage resumes after the next gap
    browser.execute_script("document.getElementById('timeline').focus(); document.dispatchEvent("
                           "new KeyboardEvent('keydown', {key: ']', bubbles: true}))")
    landed = _wait(browser, "the jump", "const t = +document.getElementById('clock').dataset.ms; "
                   "return t >= arguments[0] ? t : null", resume, timeout=20)
    assert landed - resume <= 2000, (landed, resume)
    errors = browser.execute_script("return vigilPlayer.errors")
    assert not [e for e in errors if e["fatal"]], errors


def test_the_heat_strip_shows_where_activity_rose(served: Served, browser: Any) -> None:
    """Two hours of 60-s segments whose series carry a steady noisy bit rate, and one 40-s burst of
    motion in the second hour: the timeline's heat strip marks the burst and nothing else."""
    rng = np.random.default_rng(7)
    day0 = (_midnight_ms(browser) - 86_400_000 + 3 * 3600_000) * 1000      # yesterday 03:00, browser time
    burst = (day0 + 5400 * 1_000_000, day0 + 5440 * 1_000_000)
    for i in range(120):
        a = day0 + i * 60_000_000
        series = np.zeros((60, 2), dtype=np.uint32)
        series[:, 0] = rng.normal(20_000, 1_500, 60).clip(0)          # P-frame bytes per second, noisy
        series[::2, 1] = 60_000                                       # a keyframe every 2 s
        seconds = np.arange(60) * 1_000_000 + a
        series[(seconds >= burst[0]) & (seconds < burst[1]), 0] *= 4
        served.hub.catalog.insert_segment(StoredSegment(
            "site-a", 20_000 + i, "heat", 1, a, a + 60_000_000, 1000, "0" * 64, 100, "h264", None,
            fragments.to_blob([(100, 900, a, 60_000_000)]), False, f"never-read/heat/{i}",
            activity=activity.to_blob(series)))
    browser.get(served.url + "/#/camera/site-a.heat")
    _wait(browser, "the page to start", "return window.vigilReady === true")
    if _visible(browser, "sign-in"):
        _sign_in(browser, HUB_TOKENS["viewer"])
    _wait(browser, "today's timeline", "return window.vigilTimeline")
    browser.execute_script("window.vigilTimeline = null; document.getElementById('day-prev').click()")
    _wait(browser, "yesterday's timeline", "return window.vigilTimeline && window.vigilTimeline.covered > 0")
    cells = _wait(browser, "the heat strip", "const c = [...document.querySelectorAll('#timeline .tl-heat')];"
                  "return c.length ? c.map(e => e.title) : null", timeout=15)
    view = [float(v) for v in browser.execute_script("return document.getElementById('timeline').dataset.view")
            .split(",")]
    lefts = browser.execute_script("return [...document.querySelectorAll('#timeline .tl-heat')]"
                                   ".map(e => parseFloat(e.style.left))")
    at = [view[0] + f / 100 * (view[1] - view[0]) for f in lefts]
    step = (view[1] - view[0]) / 300          # a cell is a step of about 3 px: a few minutes at 24 h
    assert all(burst[0] / 1000 - step - 1000 <= t <= burst[1] / 1000 + 1000 for t in at), (cells, at, burst)
    assert all(c.startswith("activity ") for c in cells)
