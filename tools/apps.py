"""Run ``vigil-edge`` and ``vigil-hub`` as real processes, each with its own config, data dir and logs.

Used by the pytest fixtures (``edge_factory``, ``hub_factory``, ``footage`` in tests/conftest.py)
and the benchmarks. The config is written when the object is made; ``start()`` launches the
process (again after a ``stop()``) and waits until it answers ``/healthz``:

    edge = Edge(tmp_path / "edge", [{"id": "door", "url": cam.url("door")}], {"segment_seconds": 4},
                mqtt={"url": broker.url, "username": "edge", "password": "edge-secret"})
    hub = Hub(tmp_path / "hub", broker, s3, [edge]).start()
    edge.start()
    edge.wait_segments("door", 3, timeout=40)
    hub.api("GET", "/api/v1/cameras")          # -> (200, {...}) as an admin token
    edge.stop()                                 # SIGTERM; how long it took to exit

Each run writes ``edge-<run>.out``/``.err`` (``hub-<run>.…``) in the work dir. The API tokens
are fixed test values (:data:`TOKEN` for the edge, :data:`HUB_TOKENS` by role for the hub).
Only the process each object started is ever signalled, by its PID
(:class:`tools.processes.ManagedProcess`).
"""

from __future__ import annotations

import hashlib
import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Self

from edge.catalog import Catalog, SegmentRow
from hub.config import edge_node_token
from tools.processes import VENV_BIN, ManagedProcess, free_port
from tools.services import Mosquitto, SeaweedS3, catalog_config_lines

__all__ = ["HUB_TOKENS", "TOKEN", "Edge", "Hub", "edge_mqtt"]

TOKEN = "test-token-0123456789"   # the hub's edge.token; each edge accepts edge_node_token(TOKEN, its node id)
# hub API tokens by role; the hub's config holds their sha256 under the names f"{role}-desk"
HUB_TOKENS = {"viewer": "viewer-token-0123456789", "operator": "operator-token-0123456789",
              "admin": "admin-token-0123456789"}

HEALTHY_TIMEOUT_S = 30.0


def edge_mqtt(broker: Mosquitto, **extra: Any) -> dict[str, Any]:
    """An edge's `[mqtt]` settings for `broker`, as the broker's default `edge` user."""
    return {"url": broker.url, "username": "edge", "password": "edge-secret", **extra}


class _App(ManagedProcess):
    """What `vigil-edge` and `vigil-hub` share: ``<name> --config <config>``, one pair of log files a run,
    ready when ``/healthz`` answers, a SIGTERM that must be obeyed within the timeout. ``what`` is the
    program, the console script beside this interpreter."""

    def __init__(self, workdir: Path, name: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(workdir, name, per_run_logs=True)
        self.config = workdir / f"{name}.toml"

    args: tuple[str, ...] = ()     # more command-line arguments

    def start(self, wait: bool = True) -> Self:
        """Launch; with ``wait``, until ``/healthz`` answers (AssertionError after 30 s or if it exits)."""
        self._spawn([str(VENV_BIN / self.what), "--config", str(self.config), *self.args])
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> Self:
        """Wait until a process started with ``wait=False`` answers ``/healthz`` (AssertionError
        after 30 s or if it exits): for starting several at once."""
        try:
            self._wait_ready(self._healthy, HEALTHY_TIMEOUT_S, 0.1)
        except RuntimeError as exc:
            raise AssertionError(str(exc)) from None
        return self

    def _launch(self) -> None:
        self.start()

    def _healthy(self) -> bool:
        raise NotImplementedError

    def stop(self, timeout: float | None = None) -> float:
        """SIGTERM; returns how long the process took to exit (AssertionError, after a SIGKILL, if it
        ignored SIGTERM for ``timeout`` s)."""
        timeout = self.stop_timeout_s if timeout is None else timeout
        t0 = time.monotonic()
        if not self._terminate(timeout):
            raise AssertionError(f"{self.what} ignored SIGTERM for {timeout} s")
        return time.monotonic() - t0

    def close(self) -> None:
        """SIGKILL if still running (fixture teardown)."""
        self.kill()

    def _log_files(self, suffix: str) -> list[Path]:
        """Every run's log files ending in ``suffix`` (``.out``, ``.err`` or ``.*``)."""
        return sorted(self.workdir.glob(f"{self.log_stem}-*{suffix}"))

    def _read_logs(self, suffix: str) -> str:
        return "".join(f.read_text() for f in self._log_files(suffix))


class Edge(_App):
    """A `vigil-edge` process with its own config, data dir and log files."""

    what = "vigil-edge"
    stop_timeout_s = 15.0

    def __init__(self, workdir: Path, cameras: list[dict[str, Any]], recording: dict[str, Any] | None = None,
                 data_dir: Path | None = None, node_id: str = "test-edge", mqtt: dict[str, Any] | None = None,
                 http: dict[str, Any] | None = None, extra: str = "", tls_ca: Path | None = None,
                 host: str = "127.0.0.1") -> None:
        super().__init__(workdir, "edge")
        self.node_id = node_id
        self.token = edge_node_token(TOKEN, node_id)   # its own http.token, as the hub derives it
        self.data_dir = data_dir or workdir / "data"
        self.port = free_port()
        self.scheme = "https" if http and http.get("cert_file") else "http"
        self.url = f"{self.scheme}://{host}:{self.port}"
        # the test's own requests to an HTTPS edge trust the CA that signed its certificate
        self.ssl_context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None
        lines = ["[node]", f'id = "{node_id}"', f'data_dir = "{self.data_dir}"', "", "[recording]"]
        for key, value in {"segment_seconds": 10, **(recording or {})}.items():
            lines.append(f"{key} = {json.dumps(value)}")
        lines += ["", "[http]", f'listen = "{host}:{self.port}"', f'token = "{self.token}"']
        lines += [f"{k} = {json.dumps(v)}" for k, v in (http or {}).items()] + [""]
        if mqtt is not None:
            lines += ["[mqtt]"] + [f"{k} = {json.dumps(v)}" for k, v in mqtt.items()] + [""]
        for cam in cameras:
            lines.append("[[cameras]]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in cam.items()]
            lines.append("")
        self.config.write_text("\n".join(lines) + "\n" + extra)

    def _healthy(self) -> bool:
        try:
            self.get("/healthz", token=False).close()
            return True
        except OSError:
            return False

    def get(self, path: str, token: bool = True, headers: dict[str, str] | None = None) -> Any:
        req = urllib.request.Request(f"{self.url}{path}", headers=headers or {})
        if token:
            req.add_header("Authorization", f"Bearer {self.token}")
        return urllib.request.urlopen(req, timeout=10, context=self.ssl_context)

    def get_json(self, path: str) -> Any:
        with self.get(path) as resp:
            return json.load(resp)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for f in self._log_files(".out"):
            for line in f.read_text().splitlines():
                lines.append(json.loads(line))
        return lines

    def raw_output(self) -> str:
        return self._read_logs(".*")

    def stderr(self) -> str:
        return self._read_logs(".err")

    def catalog(self) -> Catalog:
        return Catalog(self.data_dir, readonly=True)

    def segments(self, camera: str) -> list[SegmentRow]:
        c = self.catalog()
        try:
            return c.camera_segments(camera)
        finally:
            c.close()

    def wait_segments(self, camera: str, count: int, timeout: float) -> list[SegmentRow]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (self.data_dir / "catalog.db").exists():
                rows = self.segments(camera)
                if len(rows) >= count:
                    return rows
            time.sleep(0.25)
        raise AssertionError(f"{camera}: fewer than {count} segments after {timeout} s")

    def part_files(self) -> list[Path]:
        return sorted(self.data_dir.rglob("*.part"))

    def __repr__(self) -> str:
        return f"<Edge {self.node_id} {self.url} pid={self.pid} {self._state()}>"


class Hub(_App):
    """A `vigil-hub` process with its own config and data dir."""

    what = "vigil-hub"
    stop_timeout_s = 20.0

    def __init__(self, workdir: Path, broker: Mosquitto, s3: SeaweedS3, nodes: list[Edge] | None = None,
                 ingest: dict[str, Any] | None = None, extra_nodes: list[dict[str, str]] | None = None,
                 extra: str = "", role: str = "all", catalog_url: str | None = None) -> None:
        super().__init__(workdir, "hub")
        self.args = () if role == "all" else ("--role", role)
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.s3 = s3
        ingest = {"reconcile_seconds": 5, **(ingest or {})}
        lines = ["[hub]", f'data_dir = "{self.data_dir}"', f'listen = "127.0.0.1:{self.port}"', "",
                 "[mqtt]", f'url = "{broker.url}"', 'username = "hub"', 'password = "hub-secret"', "",
                 "[s3]", f'endpoint_url = "{s3.endpoint_url}"', f'bucket = "{s3.bucket}"',
                 f'access_key = "{s3.access_key}"', f'secret_key = "{s3.secret_key}"', "",
                 "[edge]", f'token = "{TOKEN}"', "",
                 *(["[catalog]", f'url = "{catalog_url}"', ""] if catalog_url else catalog_config_lines()),
                 "[ingest]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in ingest.items()] + [""]
        for e in nodes or []:
            lines += ["[[nodes]]", f'id = "{e.node_id}"', f'url = "{e.url}"', ""]
        for n in extra_nodes or []:
            lines += ["[[nodes]]"] + [f"{k} = {json.dumps(v)}" for k, v in n.items()] + [""]
        for role, token in HUB_TOKENS.items():
            lines += ["[[tokens]]", f'name = "{role}-desk"', f'sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"',
                      f'role = "{role}"', ""]
        self.config.write_text("\n".join(lines) + "\n" + extra)

    def _healthy(self) -> bool:
        try:
            urllib.request.urlopen(f"{self.url}/healthz", timeout=2).close()
            return True
        except OSError:
            return False

    def output(self) -> str:
        return self._read_logs(".*")

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for f in self._log_files(".out"):
            lines += [json.loads(line) for line in f.read_text().splitlines() if line.startswith("{")]
        return lines

    def metrics(self) -> str:
        req = urllib.request.Request(f"{self.url}/metrics", headers={"Authorization": f"Bearer {HUB_TOKENS['viewer']}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.read().decode()

    def request(self, method: str, path: str, body: Any = None, role: str | None = "admin"
                ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON or raw body) of one API call as a token of `role` (None: no token)."""
        headers = {"Content-Type": "application/json"}
        if role is not None:
            headers["Authorization"] = f"Bearer {HUB_TOKENS[role]}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw, status, got = resp.read(), resp.status, dict(resp.headers)
        except urllib.error.HTTPError as exc:
            raw, status, got = exc.read(), exc.code, dict(exc.headers)
        try:
            return status, got, json.loads(raw)
        except ValueError:
            return status, got, raw

    def api(self, method: str, path: str, body: Any = None, role: str | None = "admin") -> tuple[int, Any]:
        """(status, decoded JSON or raw body) of one API call as a token of `role` (None: no token)."""
        status, _, data = self.request(method, path, body, role)
        return status, data

    def catalog(self) -> Any:
        from hub.catalog import HubCatalog
        from hub.config import load_hub_config
        return HubCatalog(self.data_dir, readonly=True, url=load_hub_config(self.config).catalog.url)

    def __repr__(self) -> str:
        return f"<Hub {self.url} pid={self.pid} {self._state()}>"
