"""The hub's web page against a real system: test cameras → `vigil-edge` → Mosquitto → `vigil-hub` →
SeaweedFS, the page in Debian's headless Chromium (Selenium through Debian's chromedriver).

A viewer and an operator each sign in and see the node online and every camera's picture, open a
camera, find the outage on its timeline with the reason the API gives, click the timeline and
watch the player play from there (the wall-clock time shown within a GOP of the click, frames
advancing across a segment boundary and the gap). The operator then selects a range, makes an
incident of it on two cameras (with a hostile title), annotates it, changes it, finds it by
full-text search, exports the range and sees the export verified in the browser; the viewer sees
no write control and is refused a forged write. Screenshots of each view are written to
$VIGIL_SCREENSHOTS (default: the test's temp dir).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import HUB_TOKENS, Edge, Hub, Mosquitto, SeaweedS3, TestCam, edge_mqtt, wait_for
from test_player_browser import chromium_session

from shared.timeutil import iso_to_us, us_to_iso

HOSTILE = '<img src=x onerror="window.pwned=1"></script><script>window.pwned=2</script> "ladder" & rope'
GOP_MS = 2000


@dataclass
class System:
    hub: Hub
    edge: Edge
    cameras: list[str]
    outage: tuple[int, int]        # (start, end) in ms of door's gap (no footage inside)
    first_ms: int                  # door's first stored instant


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, media: dict[str, Path]) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("web-system")
    started: list[Any] = []
    try:
        broker = Mosquitto.start(tmp / "mosquitto")
        started.append(broker.stop)
        s3 = SeaweedS3.start(tmp / "s3")
        started.append(s3.stop)
        cam = TestCam.start(tmp / "cams", [f"door=h264file:{media['h264']}", f"yard=h264file:{media['h264']}"])
        started.append(cam.stop)
        edge = Edge(tmp / "edge", [{"id": "door", "url": cam.url("door")}, {"id": "yard", "url": cam.url("yard")}],
                    {"segment_seconds": 4}, node_id="site-a", mqtt=edge_mqtt(broker))
        started.append(edge.close)
        hub = Hub(tmp / "hub", broker, s3, [edge])
        started.append(hub.close)
        hub.start()
        edge.start()
        edge.wait_segments("door", 3, timeout=40)
        cam.kill()                                 # both cameras drop: an outage the edge records
        wait_for("the outage to be seen", lambda: all(
            c.get("state") not in ("recording", None) for c in edge.get_json("/api/v1/cameras")["cameras"]),
            timeout=30, every=0.25)
        time.sleep(3)
        cam.restart()
        before = len(edge.segments("door"))
        edge.wait_segments("door", before + 3, timeout=40)
        rows = edge.segments("door")
        outage = next((a.end_us, b.start_us) for a, b in itertools.pairwise(rows) if b.start_us - a.end_us > 2_000_000)

        def stored() -> bool:
            status, _, body = hub.request("GET", "/api/v1/cameras/site-a.door/segments?start="
                                          f"{us_to_iso(rows[0].start_us)}&end={us_to_iso(rows[-1].end_us)}&limit=1000",
                                          role="viewer")
            return status == 200 and len(body["segments"]) >= len(rows)
        wait_for("the hub to store the door's footage", stored, timeout=60)
        yield System(hub, edge, ["site-a.door", "site-a.yard"], (outage[0] // 1000, outage[1] // 1000),
                     rows[0].start_us // 1000)
    finally:
        for stop in reversed(started):
            try:
                stop()
            except Exception:
                pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium_session(tmp_path_factory.getbasetemp()) as driver:
        driver.set_window_size(1280, 1000)
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("VIGIL_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Page:
    def __init__(self, driver: Any, hub: Hub) -> None:
        self.d = driver
        self.hub = hub

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def fetch(self, method: str, path: str, body: Any = None, csrf: bool = True) -> dict[str, Any]:
        """A request from the page with its cookie (and, unless csrf=False, its CSRF token)."""
        return self.d.execute_async_script("""
            const [method, path, body, csrf, done] = arguments;
            const who = await (await fetch('/api/v1/session')).json();
            const headers = {'Content-Type': 'application/json'};
            if (csrf) headers['X-CSRF-Token'] = who.csrf;
            const r = await fetch(path, {method, headers, body: body === null ? undefined : JSON.stringify(body)});
            done({status: r.status, body: await r.json().catch(() => null)});""", method, path, body, csrf)

    def wait(self, what: str, script: str, *args: Any, timeout: float = 20) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.d.execute_script(script, *args)
            if value:
                return value
            if time.monotonic() > deadline:
                state = self.d.execute_script("return window.vigilPlayer ? {errors: vigilPlayer.errors, "
                                              "window: vigilPlayer.window} : null")
                pytest.fail(f"timed out waiting for {what}; player: {state}; "
                            f"console: {self.d.get_log('browser')[-20:]}")
            time.sleep(0.1)

    def text(self, element_id: str) -> str:
        return self.js("return document.getElementById(arguments[0]).textContent", element_id)

    def sign_in(self, role: str) -> None:
        self.d.get(self.hub.url + "/")
        self.wait("the page", "return window.vigilReady === true")
        if self.js("return !document.getElementById('sign-out').hidden"):
            self.js("document.getElementById('sign-out').click()")
            self.wait("signed out", "return !document.getElementById('sign-in').hidden")
        self.js("document.getElementById('token').value = arguments[0]; "
                "document.getElementById('sign-in').requestSubmit()", HUB_TOKENS[role])
        self.wait("signed in", "return document.getElementById('who').textContent === arguments[0]",
                  f"{role}-desk ({role})")

    def timeline_view(self) -> tuple[float, float]:
        a, b = self.js("return document.getElementById('timeline').dataset.view").split(",")
        return float(a), float(b)

    def x_of(self, t_ms: float) -> int:
        """The timeline's x offset (from its left edge, px) of instant t."""
        a, b = self.timeline_view()
        width = self.js("return document.getElementById('timeline').getBoundingClientRect().width")
        assert a <= t_ms <= b, f"{t_ms} is outside the timeline's view {a}..{b}"
        return round((t_ms - a) / (b - a) * width)

    def click_timeline(self, t_ms: float) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        tl = self.d.find_element(By.ID, "timeline")
        width = tl.rect["width"]
        ActionChains(self.d).move_to_element_with_offset(tl, self.x_of(t_ms) - width / 2, -20).click().perform()

    def drag_timeline(self, a_ms: float, b_ms: float) -> None:
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        tl = self.d.find_element(By.ID, "timeline")
        width = tl.rect["width"]
        xa, xb = self.x_of(a_ms) - width / 2, self.x_of(b_ms) - width / 2
        (ActionChains(self.d).move_to_element_with_offset(tl, xa, -20).click_and_hold()
         .move_by_offset((xb - xa) / 2, 0).move_by_offset((xb - xa) / 2, 0).release().perform())

    def zoom_around(self, t_ms: float, level_label: str) -> None:
        """Click near t in whatever view, pause, then zoom in (around the playhead) to `level_label`."""
        self.click_timeline(t_ms)
        self.wait("the player to start", "return window.vigilPlayer && vigilPlayer.window")
        self.js("document.getElementById('play').click()")         # pause while we aim
        for _ in range(10):
            if self.text("zoom-label") == level_label:
                break
            self.js("document.getElementById('zoom-in').click()")
        assert self.text("zoom-label") == level_label

    def no_script_ran(self) -> bool:
        return self.js("return window.pwned === undefined && !document.querySelector('img[src=x]')")


def _api_timeline(hub: Hub, camera: str, start_ms: int, end_ms: int) -> dict[str, Any]:
    status, _, body = hub.request("GET", f"/api/v1/cameras/{camera}/timeline?start={us_to_iso(start_ms * 1000)}"
                                         f"&end={us_to_iso(end_ms * 1000)}", role="viewer")
    assert status == 200, body
    return body


def _check_fleet_and_grid(page: Page, system: System) -> None:
    page.js("location.hash = '#/'")
    page.wait("the node online", "const r = document.querySelector('#nodes tr[data-node=\"site-a\"]'); "
                                 "return r && r.cells[1].textContent === 'online'")
    for camera in system.cameras:
        # the tile's picture is a decoded image, and not a blank one
        spread = page.wait(f"{camera}'s picture", """
            const img = document.querySelector(`[data-camera="${arguments[0]}"] img`);
            if (!img || !img.complete || !img.naturalWidth) return null;
            const c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const g = c.getContext('2d'); g.drawImage(img, 0, 0);
            const px = g.getImageData(0, 0, c.width, c.height).data;
            let lo = 255, hi = 0;
            for (let i = 0; i < px.length; i += 4) { lo = Math.min(lo, px[i + 1]); hi = Math.max(hi, px[i + 1]); }
            return [img.naturalWidth, hi - lo];""", camera)
        assert spread[0] == 320 and spread[1] > 40, f"{camera}: a blank picture? {spread}"


def _open_camera_and_play(page: Page, system: System) -> None:
    page.js("document.querySelector('[data-camera=\"site-a.door\"] a').click()")
    page.wait("the camera view", "return location.hash.startsWith('#/camera/site-a.door') && "
                                 "document.getElementById('timeline').dataset.view")
    page.wait("the timeline", "return document.querySelectorAll('#timeline .tl-gap').length > 0")
    # the outage is on the timeline with the reason the API gives for it
    day = page.js("return vigilTimeline")
    assert day["totalMs"] < 1000, day
    api = _api_timeline(page.hub, "site-a.door", system.first_ms - 60_000, int(time.time() * 1000))
    api_gap = next(g for g in api["gaps"] if iso_to_us(g["start"]) // 1000 <= system.outage[0] + 500
                   and iso_to_us(g["end"]) // 1000 >= system.outage[1] - 500)
    shown = page.js("return [...document.querySelectorAll('#timeline .tl-gap')].map(g => "
                    "({reason: g.dataset.reason, start: +g.dataset.start, end: +g.dataset.end, title: g.title}))")
    match = [g for g in shown if abs(g["start"] - iso_to_us(api_gap["start"]) / 1000) < 1
             and abs(g["end"] - iso_to_us(api_gap["end"]) / 1000) < 1]
    assert match and match[0]["reason"] == api_gap["reason"], (api_gap, shown)
    assert match[0]["title"].startswith(api_gap["reason"])

    # click 5 s before the outage: the player starts there, crosses a segment boundary and the gap
    target = system.outage[0] - 5000
    page.zoom_around(target, "10 min")
    page.click_timeline(target)
    clicked = page.wait("a frame", "const c = document.getElementById('clock'); return c.dataset.ms && "
                                   "vigilPlayer.window && +c.dataset.ms")
    assert abs(clicked - target) <= GOP_MS, f"clicked at {target}, the clock shows {clicked}"
    frames0 = page.js("return document.getElementById('video').getVideoPlaybackQuality().totalVideoFrames")
    page.js("document.getElementById('speed').value = '2'; "
            "document.getElementById('speed').dispatchEvent(new Event('change'))")
    after = page.wait("playback across the gap", "const t = +document.getElementById('clock').dataset.ms; "
                      "return t > arguments[0] + 1000 ? t : null", system.outage[1], timeout=30)
    frames = page.js("return document.getElementById('video').getVideoPlaybackQuality()")
    assert frames["totalVideoFrames"] > frames0 + 15 * 5, frames
    errors = page.js("return vigilPlayer.errors")
    assert not [e for e in errors if e["fatal"]], errors
    assert page.js("return document.getElementById('video').playbackRate") == 2
    assert after > system.outage[1]


def test_viewer_watches_and_cannot_write(system: System, browser: Any, shots: Path) -> None:
    page = Page(browser, system.hub)
    page.sign_in("viewer")
    _check_fleet_and_grid(page, system)
    browser.save_screenshot(str(shots / "fleet.png"))
    _open_camera_and_play(page, system)
    browser.save_screenshot(str(shots / "camera-viewer.png"))
    # no write control is shown to a viewer, and a forged write with its cookie is refused
    shown = page.js("return [...document.querySelectorAll('.write')].filter(e => e.getClientRects().length)"
                    ".map(e => e.id || e.className)")
    assert shown == []
    body = {"title": "forged", "cameras": [{"camera": "site-a.door", "start": us_to_iso(system.first_ms * 1000),
                                            "end": us_to_iso(system.outage[0] * 1000)}]}
    forged = page.fetch("POST", "/api/v1/incidents", body)
    assert forged["status"] == 403 and forged["body"]["error"]["code"] == "forbidden", forged


def test_operator_makes_an_incident_and_an_export(system: System, browser: Any, shots: Path) -> None:
    page = Page(browser, system.hub)
    page.sign_in("operator")
    _check_fleet_and_grid(page, system)
    _open_camera_and_play(page, system)
    # a write without the CSRF token is refused, even with the session cookie
    bare = page.fetch("POST", "/api/v1/incidents", {"title": "x", "cameras": []}, csrf=False)
    assert bare["status"] == 403 and bare["body"]["error"]["code"] == "csrf", bare

    # select 6 s around the outage's start, make an incident of it on both cameras
    sel = (system.outage[0] - 6000, system.outage[0] + 1000)
    page.js("document.getElementById('play').click()")
    page.drag_timeline(*sel)
    page.wait("the selection", "return !document.getElementById('selection-bar').hidden")
    page.js("document.getElementById('selection-incident').click()")
    page.wait("the form", "return !document.getElementById('selection-form').hidden && "
                          "document.querySelectorAll('#sf-cameras input').length === 2")
    page.js("""document.getElementById('sf-title').value = arguments[0];
               document.getElementById('sf-tags').value = 'ladder, night';
               document.querySelector('#sf-cameras input[value="site-a.yard"]').checked = true;
               document.getElementById('selection-form').requestSubmit()""", HOSTILE)
    incident_id = int(page.wait("the incident", "const m = location.hash.match(/^#\\/incidents\\/(\\d+)$/); "
                                "return m && document.getElementById('incident-title').textContent ? m[1] : null"))
    assert page.text("incident-title") == f"#{incident_id} {HOSTILE}"
    assert page.no_script_ran()
    _, _, made = system.hub.request("GET", f"/api/v1/incidents/{incident_id}", role="viewer")
    assert sorted(c["camera"] for c in made["cameras"]) == system.cameras and made["tags"] == ["ladder", "night"]
    made_start = iso_to_us(made["start"]) / 1000
    assert abs(made_start - sel[0]) < 2000, (made["start"], sel)

    # annotate it (hostile text again), change its status and assignee: the audit trail shows both
    page.js("document.getElementById('an-text').value = arguments[0]; "
            "document.getElementById('annotation-add').requestSubmit()", "rope " + HOSTILE)
    page.wait("the annotation", "return document.querySelectorAll('#incident-annotations li').length === 1")
    page.js("document.getElementById('ie-status').value = 'investigating'; "
            "document.getElementById('ie-assignee').value = 'night shift'; "
            "document.getElementById('incident-edit').requestSubmit()")
    page.wait("the change in the trail", "return [...document.querySelectorAll('#incident-audit td')]"
                                         ".some(td => td.textContent.includes('investigating'))")
    assert "rope " + HOSTILE in page.text("incident-annotations") and page.no_script_ran()
    browser.save_screenshot(str(shots / "incident.png"))

    # full-text search finds it; the snippet marks the words and stays text
    page.js("location.hash = '#/incidents'")
    page.js("document.getElementById('if-q').value = 'ladder rope'; "
            "document.getElementById('incident-filters').requestSubmit()")
    page.wait("the search", "return document.querySelector('#incident-rows tr[data-incident=\"' + arguments[0] + "
                            "'\"] .snippet mark')", incident_id)
    marks = page.js("return [...document.querySelectorAll('#incident-rows .snippet mark')].map(m => m.textContent)")
    assert {m.lower() for m in marks} <= {"ladder", "rope"} and marks, marks
    assert page.no_script_ran()
    browser.save_screenshot(str(shots / "incidents.png"))

    # export the selection; the page shows the export verified (signature and every file)
    page.js("location.hash = arguments[0]", f"#/camera/site-a.door?t={us_to_iso(int(sel[0]) * 1000)}")
    page.wait("the player", "return window.vigilPlayer && vigilPlayer.window")
    page.js("document.getElementById('play').click()")
    while page.text("zoom-label") != "10 min":
        page.js("document.getElementById('zoom-in').click()")
    page.drag_timeline(*sel)
    page.wait("the selection", "return !document.getElementById('selection-bar').hidden")
    page.wait("the incident on the timeline", "return document.querySelector('#timeline .tl-incident')")
    browser.save_screenshot(str(shots / "camera.png"))
    page.js("document.getElementById('selection-export').click()")
    page.wait("the form", "return !document.getElementById('selection-form').hidden")
    page.js("document.getElementById('sf-reason').value = 'police request 4411'; "
            "document.getElementById('selection-form').requestSubmit()")
    page.wait("the export done", "return location.hash === '#/exports' && [...document.querySelectorAll("
                                 "'#export-rows td.export-done')].length === 1", timeout=60)
    # a browser without Ed25519 in WebCrypto gets the hub's check of the stored export
    page.js("const real = crypto.subtle.importKey.bind(crypto.subtle);"
            "crypto.subtle.importKey = (...a) => a[2] && a[2].name === 'Ed25519' ? "
            "Promise.reject(new DOMException('no Ed25519', 'NotSupportedError')) : real(...a);"
            "document.querySelector('#export-rows td.verification button').click()")
    verdict = page.wait("the hub's verification", "const v = document.querySelector('#export-rows [data-verified]');"
                                                  " return v && [v.dataset.verified, v.dataset.where]")
    checks = page.js("return document.querySelector('#export-rows .verification').textContent")
    assert verdict == ["true", "by the hub"], checks
    assert "checked by the hub" in checks and "1 files and" in checks
    # this browser checks the signature and every file itself
    browser.refresh()
    page.wait("the exports", "return document.querySelector('#export-rows td.verification button')")
    page.js("document.querySelector('#export-rows td.verification button').click()")
    verdict = page.wait("the verification", "const v = document.querySelector('#export-rows [data-verified]'); "
                                            "return v && [v.dataset.verified, v.dataset.where]")
    checks = page.js("return document.querySelector('#export-rows .verification').textContent")
    assert verdict == ["true", "in this browser"], checks
    assert "manifest signed by ed25519:" in checks and "site-a.door.mp4" in checks and "as signed" in checks
    browser.save_screenshot(str(shots / "exports.png"))
    print(f"\nscreenshots in {shots}")
