"""Property-based fuzz of the hub API from its own OpenAPI document, plus auth and route coverage.

The API runs in this process (tests/hubkit.py: the real catalog, a real S3 server) and
schemathesis calls the ASGI app directly. The catalog holds real recorded footage of two cameras
(so thumbnails, media and exports work), incidents, a tag, annotations and an export made through
the API, so the by-id paths have something to find.

    test_fuzz_with_every_check          schemathesis strategies from the served /openapi.json, positive and
                                        negative inputs, generated and real path ids, as admin: every default
                                        check of schemathesis on, among them that valid requests are accepted
                                        and invalid ones refused, and that answers match the document
    test_every_endpoint_needs_a_token   no token: 401 + WWW-Authenticate; a too-low role: 403
    test_openapi_matches_routes         the served document, the route table and the Starlette app agree

What JSON Schema cannot say (`end` after `start` and at most `api.max_range_days` later, a body naming
a camera or incident the hub knows, an annotation's instant or range but not both, a revocation's
issuer or all but not both) the handlers check and answer 400/422, each tested on its own in
tests/test_hub_api.py and tests/test_hostile_client.py; positive cases are made to keep
those rules (`keep_cross_field_rules`) before they are sent, negative ones are sent as generated.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hubkit import InProcessHub, seed_footage
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from hub.api.web import PAGE_PATHS
from hub.config import ROLES
from shared.timeutil import INSTANT_MAX_US, now_us, parse_instant, us_to_iso
from tools.apps import HUB_TOKENS
from tools.services import SeaweedS3

# Examples per operation, generation mode and path-id source (generated / real). Hypothesis runs
# derandomized, so CI sends the same requests every time.
MAX_EXAMPLES = 50
ADMIN = {"Authorization": f"Bearer {HUB_TOKENS['admin']}"}
# POSTs that change nothing a viewer may not read: a playback token only grants what its holder can see
# writes a viewer may make: a playback token, signing itself out
VIEWER_POSTS = {("POST", "/api/v1/playback-tokens"), ("DELETE", "/api/v1/session")}
# the sign-in takes its token in the body (tests/test_sessions.py)
SIGN_IN = ("POST", "/api/v1/session")
HOUR_US = 3600 * 1_000_000


class Seeded:
    """The hub and ids that exist in its catalog."""

    def __init__(self, hub: InProcessHub, incident: int, annotation: int, tag: str, export: str,
                 window: tuple[int, int]) -> None:
        self.hub = hub
        self.export = export
        self.incident = incident
        self.annotation = annotation
        self.tag = tag
        self.window = window

    def path_values(self, path: str) -> dict[str, str]:
        """Real values for the path parameters of an API path template."""
        if "/nodes/{node}" in path:
            return {"node": "e1"}
        if "{camera}" in path:
            return {"camera": "e1.cam1"}
        if "/segments/{id}" in path:
            return {"id": "e1.1"}
        if "/incidents/{id}" in path:
            return {"id": str(self.incident)}
        if "/annotations/{id}" in path:
            return {"id": str(self.annotation)}
        if "/exports/{id}" in path:
            return {"id": self.export, "name": "manifest.json"}
        if "/tags/{name}" in path:
            return {"name": self.tag}
        assert "{" not in path, f"no real value for the parameters of {path}"
        return {}

    def url_path(self, path: str) -> str:
        for name, value in self.path_values(path).items():
            path = path.replace("{" + name + "}", value)
        return path


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, shared_s3: SeaweedS3, media: dict[str, Path]) -> Iterator[Seeded]:
    root = tmp_path_factory.mktemp("hubfuzz")
    # proxy mode, so media requests (and Range handling) go through the hub to S3
    hub = InProcessHub(root / "hub", shared_s3, extra='[api]\nmedia = "proxy"\n')
    try:
        start = now_us() - HOUR_US
        segs = seed_footage(hub, media["h264"], "e1", "cam1", start, 6)
        seed_footage(hub, media["h264"], "e1", "cam2", start, 3, first_seq=31)
        window = {"start": us_to_iso(start), "end": us_to_iso(segs[-1].end_us)}
        incidents = [_create(hub, "/api/v1/incidents", {
            "title": f"door forced {i}", "description": "seen on the night shift", "severity": severity,
            "tags": ["door", "night"], "assignee": "sam", "hold": i == 1,
            "cameras": [{"camera": "e1.cam1", **window}, {"camera": "e1.cam2", **window}]})
            for i, severity in enumerate(("high", "low"))]
        tag = _create(hub, "/api/v1/tags", {"name": "perimeter", "colour": "#00ff00", "category": "zone"})
        annotation = _create(hub, "/api/v1/annotations", {
            "camera": "e1.cam1", "at": window["start"], "text": "person at the door", "kind": "marker",
            "incident": incidents[0]["id"]})
        _create(hub, "/api/v1/annotations", {"camera": "e1.cam2", **window, "text": "van"})
        status, export = hub.api("POST", "/api/v1/exports", {"cameras": [{"camera": "e1.cam1", **window}],
                                                              "reason": "fuzz"}, role="operator")
        assert status == 202, export
        for _ in range(600):
            if hub.api("GET", f"/api/v1/exports/{export['id']}")[1]["status"] in ("done", "failed"):
                break
            hub.stop_event.wait(0.05)
        yield Seeded(hub, incidents[0]["id"], annotation["id"], tag["name"], export["id"],
                     (start, segs[-1].end_us))
    finally:
        hub.close()


def _create(hub: InProcessHub, path: str, body: dict[str, Any]) -> dict[str, Any]:
    status, data = hub.api("POST", path, body, role="operator")
    assert status == 201, f"POST {path}: {status} {data}"
    return data


def served_document(hub: InProcessHub) -> dict[str, Any]:
    status, doc = hub.api("GET", "/openapi.json", role="viewer")
    assert status == 200 and isinstance(doc, dict), (status, doc)
    return doc


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]


def _error(data: Any) -> dict[str, Any]:
    """The {"code", "message"} of an error answer, else {}."""
    err = data.get("error") if isinstance(data, dict) else None
    return err if isinstance(err, dict) else {}


# -- the fuzz -------------------------------------------------------------------------------------
def _instant(value: Any, default: int) -> int:
    try:
        return parse_instant(value) if isinstance(value, str | int | float) else default
    except ValueError:
        return default


def _ordered(holder: dict[str, Any], default: int, span_us: int = HOUR_US) -> None:
    """`start` as generated (or `default`), `end` an hour later: a range the handlers accept."""
    start = min(_instant(holder.get("start"), default), INSTANT_MAX_US - span_us)
    holder["start"], holder["end"] = us_to_iso(start), us_to_iso(start + span_us)


def keep_cross_field_rules(case: Any, seeded: Seeded) -> None:
    """Make a positive case keep the rules JSON Schema cannot state (module doc)."""
    query, body = case.query, case.body
    if isinstance(query, dict) and ("start" in query or "end" in query):
        _ordered(query, seeded.window[0])
    if not isinstance(body, dict):
        return
    path = case.operation.path
    if path.endswith("/playback-tokens/revoke"):       # one issuer (a configured API token) or all
        if body.get("all"):
            body.pop("issuer", None)
        else:
            body.update(issuer="viewer-desk", all=False)
    elif path.endswith("/playback-tokens"):
        body["camera"] = "e1.cam1"
        _ordered(body, seeded.window[0])
    elif isinstance(body.get("cameras"), list) and body["cameras"]:   # incidents and exports: a range per camera
        for link in body["cameras"]:
            link["camera"] = "e1.cam1"
            _ordered(link, seeded.window[0])
        if path.endswith("/exports"):      # a camera named twice is exported over the envelope of its ranges
            for link in body["cameras"]:
                link.update(start=body["cameras"][0]["start"], end=body["cameras"][0]["end"])
    elif "/annotations" in path:
        if "camera" in body:
            body["camera"] = "e1.cam1"
        if body.get("incident") is not None:
            body["incident"] = seeded.incident
        if body.get("at") is not None:
            body.pop("start", None)
            body.pop("end", None)
        elif body.get("start") is not None or body.get("end") is not None or path.endswith("/annotations"):
            body.pop("at", None)
            _ordered(body, seeded.window[0])


def _request_text(case: Any) -> str:
    body = "" if not isinstance(case.body, dict | list | str | int | float) else f" body={case.body!r}"[:600]
    return f"{case.method} {case.formatted_path} query={case.query!r}{body}"


def _fuzz(operation: Any, mode: Any, path_parameters: dict[str, str] | None, seeded: Seeded,
          sent: dict[str, int], failures: dict[str, str]) -> None:
    """MAX_EXAMPLES generated requests to one operation, as admin."""

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case: Any) -> None:
        if mode is schemathesis.GenerationMode.POSITIVE:
            keep_cross_field_rules(case, seeded)
        response = case.call(headers=ADMIN)
        sent[operation.label] = sent.get(operation.label, 0) + 1
        try:
            case.validate_response(response, headers=ADMIN)
        except (AssertionError, BaseExceptionGroup) as exc:
            for failure in getattr(exc, "exceptions", [exc]):
                failures.setdefault(f"{operation.label} [{mode.value}]: {type(failure).__name__}",
                                    f"{_request_text(case)}\n  -> {response.status_code} "
                                    f"{response.content[:300].decode(errors='replace')}"
                                    f"\n  {str(failure)[:800]}")

    run()


def test_fuzz_with_every_check(seeded: Seeded) -> None:
    """Every documented operation, positive and negative inputs, generated and real path ids: every
    default check of schemathesis passes."""
    hub = seeded.hub
    config = schemathesis.Config.from_dict({"headers": ADMIN, "generation": {"deterministic": True,
                                                                             "database": "none"}})
    schema = schemathesis.openapi.from_asgi("/openapi.json", hub.client.app, headers=ADMIN, config=config)
    failures: dict[str, str] = {}   # first failure of each (operation, mode, check)
    sent: dict[str, int] = {}
    modes = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)
    for result in schema.get_all_operations():
        operation = result.ok()
        real = seeded.path_values(operation.path)
        for mode in modes:
            for path_parameters in ([None, real] if real else [None]):
                try:
                    _fuzz(operation, mode, path_parameters, seeded, sent, failures)
                except Unsatisfiable:  # nothing to make invalid: no parameters, no body
                    assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label

    total = sum(sent.values())
    print(f"\nfuzz: {total} requests over {len(sent)} operations")
    # schemathesis leaves out the operation that serves the schema itself
    documented = {f"{m} {p}" for m, p, _ in operations(served_document(hub))} - {"GET /openapi.json"}
    assert set(sent) == documented, f"operations never called: {sorted(documented - set(sent))}"
    assert not failures, f"{len(failures)} failures:\n" + "\n\n".join(f"[{k}]\n{v}" for k, v in failures.items())


# -- auth ------------------------------------------------------------------------------------------
def _required_role(op: dict[str, Any]) -> str:
    """The role in the operation's description ("Role: operator or above.")."""
    for role in ROLES:
        if f"Role: {role} or above." in op.get("description", ""):
            return role
    raise AssertionError(f"{op['operationId']}: secured, but its description names no role")


def test_every_endpoint_needs_a_token(seeded: Seeded) -> None:
    hub = seeded.hub
    doc = served_document(hub)
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    public = set()
    problems = []
    secured = 0
    for method, path, op in operations(doc):
        url = seeded.url_path(path)
        if not op.get("security", doc.get("security")):
            public.add((method, path))
            if (method, path) == SIGN_IN:
                status, _, data = hub.request(method, url, {"token": HUB_TOKENS["viewer"]}, role=None)
                hub.client.cookies.clear()      # the rest is asked without any credential
                if status != 201:
                    problems.append(f"{method} {path} (sign-in with a viewer token): {status} {data}")
                continue
            status, _, data = hub.request(method, url, role=None)
            if status != 200:
                problems.append(f"{method} {path} (public): {status} {data}")
            continue
        secured += 1
        body = {} if "requestBody" in op else None
        status, headers, data = hub.request(method, url, body, role=None)
        code = _error(data).get("code")
        if status != 401 or code != "unauthorized" or not _error(data).get("message"):
            problems.append(f"{method} {path} without a token: {status} {data}")
        elif not headers.get("www-authenticate", "").startswith("Bearer"):
            problems.append(f"{method} {path} without a token: 401 without WWW-Authenticate: Bearer ({headers})")
        for bad in ("Bearer wrong-token-0123456789", "Basic YWRtaW46YWRtaW4=", "Bearer "):
            resp = hub.client.request(method, url, headers={"Authorization": bad},
                                      content=None if body is None else b"{}")
            if resp.status_code != 401:
                problems.append(f"{method} {path} with {bad!r}: {resp.status_code}")
        required = _required_role(op)
        if method != "GET" and (method, path) not in VIEWER_POSTS:
            assert required != "viewer", f"{method} {path}: a write open to viewers"
        for role in ROLES[:ROLES.index(required)]:
            status, _, data = hub.request(method, url, body, role=role)
            code = _error(data).get("code")
            if status != 403 or code != "forbidden":
                problems.append(f"{method} {path} as {role} (needs {required}): {status} {data}")
    assert public == {("GET", "/healthz"), ("GET", "/readyz"), SIGN_IN}, f"public operations: {sorted(public)}"
    assert secured >= 25, f"only {secured} secured operations documented"
    assert not problems, "\n".join(problems)


# -- document <-> routes -------------------------------------------------------------------------------
UNDOCUMENTED = [  # (method, path, expected status): plausible requests the API does not serve
    ("GET", "/api/v1/segments", 404), ("GET", "/api/v1/incidents/1/annotations", 404),
    ("GET", "/api/v2/nodes", 404), ("GET", "/api/v1/segments/e1.1/media", 404), ("GET", "/docs", 404),
    ("DELETE", "/api/v1/incidents/1", 405), ("PUT", "/api/v1/incidents/1", 405), ("POST", "/api/v1/nodes", 405),
    ("PUT", "/api/v1/tags/perimeter", 405), ("DELETE", "/api/v1/segments/e1.1", 405),
    ("POST", "/api/v1/cameras/e1.cam1/segments", 405), ("GET", "/api/v1/retention/run", 405),
    ("PATCH", "/api/v1/audit", 405),
]


def test_openapi_matches_routes(seeded: Seeded) -> None:
    hub = seeded.hub
    doc = served_document(hub)
    served = {(m, p) for m, p, _ in operations(doc)}
    declared = {(ep.method, ep.path) for ep in hub.app.endpoints}
    routed = {(m, r.path) for r in hub.client.app.routes for m in r.methods  # type: ignore[attr-defined]
              if m != "HEAD" and r.path not in PAGE_PATHS}     # (the web page is not part of the API)
    assert doc == hub.app.spec, "the served document differs from the one built from the endpoints"
    assert served - routed == set(), f"documented, but no route: {sorted(served - routed)}"
    assert routed - served == set(), f"routed, but not documented: {sorted(routed - served)}"
    assert declared == served

    problems = []
    for method, path, op in operations(doc):
        url = seeded.url_path(path)
        if method == "DELETE":  # an id that does not exist: probe the route without deleting anything
            url = path.replace("{id}", "999999999").replace("{name}", "no-such-tag")
        status, _, data = hub.request(method, url, {} if "requestBody" in op else None, role="admin")
        message = _error(data).get("message", "")
        if status == 405 or (status == 404 and message.startswith("no route")):
            problems.append(f"documented {method} {path}: {status} {data}")
    for method, path, expected in UNDOCUMENTED:
        status, headers, data = hub.request(method, path, {} if method != "GET" else None, role="admin")
        code = _error(data).get("code")
        want = "not_found" if expected == 404 else "method_not_allowed"
        if (status, code) != (expected, want):
            problems.append(f"undocumented {method} {path}: {status} {data}, expected {expected} {want}")
        if status == 405 and not headers.get("allow"):
            problems.append(f"undocumented {method} {path}: 405 without an Allow header")
    assert not problems, "\n".join(problems)
