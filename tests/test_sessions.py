"""Signing in from a browser (issue 15): an API token becomes an HttpOnly, SameSite=Strict session
cookie; writes in a session need its CSRF token; signing out and expiry end it; the role is the
token's. The hub runs in the test process (tests/hubkit.py) with a real catalog and S3; each test
is its own browser (a TestClient with its own cookie jar)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from conftest import hub_sql
from hubkit import InProcessHub, seed_fake
from starlette.testclient import TestClient

from shared.timeutil import now_us
from tools.apps import HUB_TOKENS
from tools.services import SeaweedS3

API = "/api/v1"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, shared_s3: SeaweedS3) -> Iterator[InProcessHub]:
    hub = InProcessHub(tmp_path_factory.mktemp("sessions") / "hub", shared_s3, nodes=("e1",),
                       extra="[api]\nsession_hours = 0.001\n")      # 3.6 s: the expiry test waits for it
    seed_fake(hub, "e1", "cam1", now_us() - 3_600_000_000, 3)
    try:
        yield hub
    finally:
        hub.close()


@pytest.fixture
def browser(hub: InProcessHub) -> Iterator[TestClient]:
    with TestClient(hub.app.app(), raise_server_exceptions=False) as client:
        yield client


def _sign_in(browser: TestClient, role: str, **headers: str) -> dict[str, str]:
    resp = browser.post(f"{API}/session", json={"token": HUB_TOKENS[role]}, headers=headers)
    assert resp.status_code == 201, resp.text
    return resp.json() | {"set-cookie": resp.headers["set-cookie"]}


def _incident(browser: TestClient, csrf: str | None) -> int:
    headers = {} if csrf is None else {"X-CSRF-Token": csrf}
    resp = browser.post(f"{API}/incidents", headers=headers, json={
        "title": "gate left open", "cameras": [{"camera": "e1.cam1", "start": time.time() - 3500,
                                                "end": time.time() - 3400}]})
    return resp.status_code


def test_a_token_becomes_an_httponly_strict_cookie_and_the_token_is_not_kept(hub: InProcessHub,
                                                                             browser: TestClient) -> None:
    answer = _sign_in(browser, "operator")
    cookie = answer["set-cookie"]
    assert cookie.startswith("vigil_session=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/" in cookie and "Max-Age=3" in cookie and "Secure" not in cookie     # plain http here
    assert (answer["name"], answer["role"]) == ("operator-desk", "operator") and len(answer["csrf"]) >= 30
    session_id = cookie.split(";")[0].split("=", 1)[1]
    assert HUB_TOKENS["operator"] not in cookie and len(session_id) >= 40
    kept = repr([tuple(r) for r in hub_sql(hub, "SELECT * FROM sessions")])   # what the catalog keeps
    assert HUB_TOKENS["operator"] not in kept and session_id not in kept and "operator-desk" in kept
    if hub.catalog.path is not None:                        # SQLite: nowhere in the file either
        db = hub.catalog.path.read_bytes()
        assert HUB_TOKENS["operator"].encode() not in db and session_id.encode() not in db
    # the cookie alone authenticates reads, as the token's role
    resp = browser.get(f"{API}/session")
    assert resp.status_code == 200 and resp.json()["csrf"] == answer["csrf"], resp.text
    assert browser.get(f"{API}/cameras").status_code == 200
    # behind a TLS proxy the cookie is Secure
    assert "; Secure" in _sign_in(TestClient(hub.app.app()), "viewer", **{"X-Forwarded-Proto": "https"})["set-cookie"]


def test_writes_in_a_session_need_the_csrf_token_and_the_role(hub: InProcessHub, browser: TestClient) -> None:
    answer = _sign_in(browser, "operator")
    assert _incident(browser, None) == 403                       # a forged form post from another page
    assert _incident(browser, "not-the-token") == 403
    assert _incident(browser, answer["csrf"]) == 201
    resp = browser.post(f"{API}/incidents", json={}, headers={"X-CSRF-Token": ""})
    assert resp.status_code == 403 and resp.json()["error"]["code"] == "csrf"
    viewer = TestClient(hub.app.app())
    v = _sign_in(viewer, "viewer")
    status = _incident(viewer, v["csrf"])
    assert status == 403                                         # the role is still the token's
    # a bad token signs nobody in, and sets no cookie
    resp = TestClient(hub.app.app()).post(f"{API}/session", json={"token": "nope-" + "x" * 20})
    assert resp.status_code == 401 and "set-cookie" not in resp.headers


def test_signing_out_and_expiry_end_the_session(hub: InProcessHub, browser: TestClient) -> None:
    answer = _sign_in(browser, "viewer")
    stolen = browser.cookies.get("vigil_session")
    assert browser.get(f"{API}/cameras").status_code == 200
    assert browser.delete(f"{API}/session").status_code == 403  # a write: it needs the CSRF token too
    resp = browser.delete(f"{API}/session", headers={"X-CSRF-Token": answer["csrf"]})
    assert resp.status_code == 204 and "Max-Age=0" in resp.headers["set-cookie"]
    replay = TestClient(hub.app.app(), cookies={"vigil_session": stolen})
    resp = replay.get(f"{API}/cameras")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "session_expired"
    # a session lasts api.session_hours (3.6 s here)
    _sign_in(browser, "viewer")
    kept = browser.cookies.get("vigil_session")
    assert browser.get(f"{API}/cameras").status_code == 200
    time.sleep(4.0)
    assert browser.get(f"{API}/cameras").status_code == 401    # the browser dropped the cookie (Max-Age)
    resp = TestClient(hub.app.app(), cookies={"vigil_session": kept}).get(f"{API}/cameras")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "session_expired"   # and the hub too
    # a stale cookie does not stand in the way of signing in again
    _sign_in(browser, "viewer")
    assert browser.get(f"{API}/cameras").status_code == 200


def test_a_bearer_token_wins_over_a_session_cookie(hub: InProcessHub, browser: TestClient) -> None:
    _sign_in(browser, "viewer")
    resp = browser.get(f"{API}/session", headers={"Authorization": f"Bearer {HUB_TOKENS['admin']}"})
    assert resp.status_code == 200 and resp.json() == {"name": "admin-desk", "role": "admin", "csrf": None,
                                                       "expires": None}
    # and a bearer write needs no CSRF token (no cookie is involved)
    resp = browser.post(f"{API}/incidents", headers={"Authorization": f"Bearer {HUB_TOKENS['operator']}"}, json={
        "title": "bearer write", "cameras": [{"camera": "e1.cam1", "start": time.time() - 3500,
                                              "end": time.time() - 3400}]})
    assert resp.status_code == 201, resp.text


def test_signing_in_needs_no_path_or_query_tricks(hub: InProcessHub) -> None:
    """The sign-in body is checked like any other: no token, a blank one, an unknown field."""
    client = TestClient(hub.app.app())
    for body, code in (({}, "missing_field"), ({"token": "   "}, "bad_field"), ({"token": "x", "keep": True},
                                                                                  "unknown_field")):
        resp = client.post(f"{API}/session", json=body)
        assert resp.status_code in (400, 422) and resp.json()["error"]["code"] == code, (body, resp.text)


def test_signing_in_keeps_no_secret_in_the_log(hub: InProcessHub, browser: TestClient,
                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO"):
        answer = _sign_in(browser, "admin")
    text = "\n".join(r.getMessage() + str(r.__dict__) for r in caplog.records)
    assert "admin-desk" in text
    assert HUB_TOKENS["admin"] not in text and answer["csrf"] not in text
    assert browser.cookies.get("vigil_session") not in text
