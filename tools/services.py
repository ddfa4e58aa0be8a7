"""Real servers for the tests, the benchmarks and ``vigil-demo``: a Mosquitto MQTT broker and a SeaweedFS S3 gateway.

Both listen on 127.0.0.1 with free ports, keep all their files in the given work directory,
and are only ever signalled by the PID of the process they started
(:class:`tools.processes.ManagedProcess`). Plain classes; the pytest fixtures wrap them.

    broker = Mosquitto.start(tmp_path / "mqtt")           # users hub/edge/test
    tls = Mosquitto.start(tmp_path / "mqtts", tls=True)   # mqtts://, server cert from a throwaway CA
    tls.url, tls.ca_file                                  # -> "mqtts://127.0.0.1:PORT", Path of the CA cert
    broker.publish("vigil/x", b"{bad json", retain=True)
    broker.subscribe_collect("vigil/#", 0.5)              # -> [(topic, payload, retain)]
    broker.restart()                                      # same port, same persistence
    broker.stop()

    s3 = SeaweedS3.start(tmp_path / "s3")                 # bucket "vigil" created
    s3.client().put_object(Bucket=s3.bucket, Key="k", Body=b"x")
    s3.list_keys()                                        # -> {"k": 1}
    s3.stop()
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tools.processes import VENV_BIN, ManagedProcess, free_port, free_ports

__all__ = ["DEFAULT_MQTT_USERS", "Mosquitto", "Postgres", "SeaweedS3", "free_ports", "make_ca", "make_server_cert"]

MOSQUITTO = "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = "mosquitto_passwd"
MOSQUITTO_PUB = "mosquitto_pub"
OPENSSL = "openssl"

DEFAULT_MQTT_USERS: dict[str, str] = {"hub": "hub-secret", "edge": "edge-secret", "test": "test-secret"}

MQTT_READY_TIMEOUT_S = 10.0
S3_READY_TIMEOUT_S = 60.0
_MAX_UNIX_SOCKET_PATH = 100  # sun_path holds 108 bytes; weed cannot listen on a longer socket path
_AUTO_PORT_ATTEMPTS = 3  # with auto-picked ports, retry this often when a port was taken meanwhile

_seq = itertools.count()


# ---------------------------------------------------------------------------- TLS
def _openssl(*args: str) -> None:
    exe = shutil.which(OPENSSL)
    if exe is None:
        raise RuntimeError("the openssl command line tool is needed for TLS test certificates (package openssl)")
    result = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed with status {result.returncode}:\n{result.stderr[-2000:]}")


def make_ca(directory: Path, name: str = "ca", subject: str = "/CN=Vigil test CA") -> Path:
    """A throwaway CA in ``directory``: ``<name>.key`` (no passphrase) and self-signed ``<name>.crt`` (returned)."""
    directory = Path(directory).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    key, cert = directory / f"{name}.key", directory / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", subject, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    key.chmod(0o600)
    return cert


def make_server_cert(directory: Path, ca_cert: Path, name: str = "server",
                     alt_names: tuple[str, ...] = ("IP:127.0.0.1", "DNS:localhost")) -> tuple[Path, Path]:
    """A server key and cert signed by ``ca_cert`` (its key next to it as ``.key``); returns ``(cert, key)``."""
    directory = Path(directory).resolve()
    key, csr, cert = directory / f"{name}.key", directory / f"{name}.csr", directory / f"{name}.crt"
    ext = directory / f"{name}.ext"
    ext.write_text("basicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\n"
                   "extendedKeyUsage=serverAuth\n"
                   f"subjectAltName={','.join(alt_names)}\n"
                   "subjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid\n")
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", "/CN=localhost")
    key.chmod(0o600)
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_cert.with_suffix(".key")),
             "-set_serial", str(int.from_bytes(os.urandom(8), "big")), "-days", "2", "-extfile", str(ext),
             "-out", str(cert))
    csr.unlink()
    ext.unlink()
    return cert, key


# --------------------------------------------------------------------------- MQTT
class Mosquitto(ManagedProcess):
    """A running ``mosquitto`` broker with password auth on one loopback port (optionally TLS only).

    ``stop()`` is a SIGTERM (the broker saves its persistence file), then a SIGKILL after 10 s;
    ``kill()`` is a crashed broker (only what autosave wrote in the last second survives).
    """

    what = "mosquitto"
    stop_timeout_s = 10.0

    def __init__(self, workdir: Path, users: dict[str, str], port: int, tls: bool = False,
                 also_on: tuple[str, ...] = ()) -> None:
        super().__init__(Path(workdir).resolve(), "mosquitto")
        self.users = dict(users)
        self.port = port
        self.tls = tls
        self.also_on = also_on        # more addresses the listener's port is bound to (tools/wan.py)
        self.ca_file = self.workdir / "ca.crt"          # with tls: the CA that signed the broker's cert
        self.cert_file = self.workdir / "server.crt"
        self.key_file = self.workdir / "server.key"
        self.conf_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        self.passwd_path = self.workdir / "passwd"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    # ---------------------------------------------------------------- start
    @classmethod
    def start(cls, workdir: Path, users: dict[str, str] | None = None, port: int | None = None,
              tls: bool = False, also_on: tuple[str, ...] = ()) -> Mosquitto:
        """Write config and password file, start the broker, wait until an authenticated publish works.

        ``users`` defaults to :data:`DEFAULT_MQTT_USERS`.  With ``port=None`` a free port is
        picked (and re-picked if another process grabbed it first).  With ``tls=True`` a fresh
        throwaway CA (``ca.crt``, exposed as ``ca_file``) and a server cert for 127.0.0.1/localhost
        signed by it are made with the openssl tool in ``workdir``, and the listener speaks only
        TLS (``url`` is ``mqtts://``).  Raises RuntimeError with the log tail if the broker is
        not ready within 10 s.  ``also_on``: addresses (besides 127.0.0.1) to listen on as well,
        on the same port with the same settings, for clients in another network namespace.
        """
        users = dict(DEFAULT_MQTT_USERS if users is None else users)
        if not users:
            raise ValueError("Mosquitto needs at least one user (anonymous access is off)")
        if tls:
            ca_cert = make_ca(workdir, "ca")
            make_server_cert(workdir, ca_cert, "server")

        def make() -> Mosquitto:
            broker = cls(workdir, users, port if port is not None else free_port(), tls=tls, also_on=also_on)
            broker.workdir.mkdir(parents=True, exist_ok=True)
            broker._write_config()
            return broker

        return cls._launch_first(make, 1 if port is not None else _AUTO_PORT_ATTEMPTS)

    def _write_config(self) -> None:
        # Global settings first; with per_listener_settings the auth options belong to the listener.
        conf = [
            "per_listener_settings true",
            "persistence true",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            f"log_dest file {self.log_path}",
            "log_type all",
            "user root",
        ]
        for host in ("127.0.0.1", *self.also_on):
            conf += ["", f"listener {self.port} {host}"]
            if self.tls:
                conf += [f"cafile {self.ca_file}", f"certfile {self.cert_file}", f"keyfile {self.key_file}",
                         "tls_version tlsv1.2"]  # the minimum; 1.3 is offered too
            conf += [
                "allow_anonymous false",
                f"password_file {self.passwd_path}",
            ]
        self.conf_path.write_text("\n".join(conf) + "\n")
        self.passwd_path.unlink(missing_ok=True)
        for i, (user, password) in enumerate(self.users.items()):
            flags = ["-c", "-b"] if i == 0 else ["-b"]
            subprocess.run([MOSQUITTO_PASSWD, *flags, str(self.passwd_path), user, password],
                           check=True, capture_output=True, timeout=30)
        self.passwd_path.chmod(0o600)

    def _ready_user(self) -> str:
        return "test" if "test" in self.users else next(iter(self.users))

    def _launch(self) -> None:
        """Start the process and wait until an authenticated publish works (RuntimeError, child gone, if not)."""
        self._spawn([MOSQUITTO, "-c", str(self.conf_path)], cwd=self.workdir)
        user = self._ready_user()
        cmd = [MOSQUITTO_PUB, "-h", "127.0.0.1", "-p", str(self.port), "-u", user, "-P", self.users[user],
               "-t", "ready", "-m", "x"]
        if self.tls:
            cmd += ["--cafile", str(self.ca_file)]

        def published() -> bool:
            try:
                return subprocess.run(cmd, capture_output=True, timeout=5).returncode == 0
            except subprocess.TimeoutExpired:
                return False

        self._wait_ready(published, MQTT_READY_TIMEOUT_S, 0.05)

    def _failure_details(self) -> str:
        return f"(port {self.port})\n{self.log_text()}"

    def _bind_failed(self) -> bool:
        return "address already in use" in self.run_text().lower()

    def log_paths(self) -> tuple[Path, ...]:
        """The broker's log file plus its stdout/stderr."""
        return self.log_path, self.stdout_path, self.stderr_path

    # --------------------------------------------------------------- client
    @contextlib.contextmanager
    def _client(self, user: str) -> Iterator[Any]:
        """A connected paho client (network loop running); raises RuntimeError if CONNACK is a failure."""
        import paho.mqtt.client as mqtt

        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"vigil-test-{os.getpid()}-{next(_seq)}")
        client.username_pw_set(user, self.users[user])
        if self.tls:
            client.tls_set(ca_certs=str(self.ca_file))  # verifies the chain and that the cert names 127.0.0.1
        connected = threading.Event()
        result: list[Any] = []

        def on_connect(_c: Any, _u: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
            result.append(reason_code)
            connected.set()

        client.on_connect = on_connect
        client.connect("127.0.0.1", self.port, keepalive=30)
        client.loop_start()
        try:
            if not connected.wait(5):
                raise RuntimeError(f"no CONNACK from {self.url} within 5 s")
            if result[0].is_failure:
                raise RuntimeError(f"MQTT connect as {user!r} refused: {result[0]}")
            yield client
        finally:
            client.disconnect()
            client.loop_stop()

    def publish(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 1,
                user: str = "test") -> None:
        """Publish one message (e.g. a malformed payload) and wait until the broker has it."""
        with self._client(user) as client:
            info = client.publish(topic, payload, qos=qos, retain=retain)
            info.wait_for_publish(5)
            if not info.is_published():
                raise RuntimeError(f"publish to {topic!r} not acknowledged within 5 s")

    def subscribe_collect(self, topic_filter: str, seconds: float, user: str = "test") -> list[tuple[str, bytes, bool]]:
        """Subscribe (QoS 1) and return ``(topic, payload, retain)`` for everything received in ``seconds``.

        The window starts once the SUBACK arrived, so retained messages are always included.
        """
        with self.collecting(topic_filter, user) as got:
            time.sleep(seconds)
            return list(got)

    @contextlib.contextmanager
    def collecting(self, topic_filter: str, user: str = "test") -> Iterator[list[tuple[str, bytes, bool]]]:
        """Subscribe (QoS 1) for the ``with`` block; the list it yields grows by ``(topic, payload,
        retain)`` per message received, in order (retained ones first: it starts after the SUBACK)."""
        import paho.mqtt.client as mqtt

        got: list[tuple[str, bytes, bool]] = []
        subscribed = threading.Event()

        def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
            got.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

        def on_subscribe(_c: Any, _u: Any, _mid: int, reason_codes: list[Any], _props: Any) -> None:
            subscribed.set()

        with self._client(user) as client:
            client.on_message = on_message
            client.on_subscribe = on_subscribe
            client.subscribe(topic_filter, qos=1)
            if not subscribed.wait(5):
                raise RuntimeError(f"no SUBACK for {topic_filter!r} within 5 s")
            yield got

    def __repr__(self) -> str:
        return f"<Mosquitto {self.url} pid={self.pid} {self._state()}>"


# ----------------------------------------------------------------------------- S3
class SeaweedS3(ManagedProcess):
    """A running ``weed mini`` (master, volume, filer, S3 in one process) with one signed-auth identity.

    Its log goes to stderr (``weed.err``). ``stop()`` is a SIGTERM (weed shuts down in 2-4 s), then
    a SIGKILL after 15 s; ``kill()`` makes S3 disappear at once (connections reset).
    """

    what = "weed mini"
    stop_timeout_s = 15.0
    bind_retry_pause_s = 0.5
    region = "us-east-1"
    _PORT_NAMES = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
                   "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc")

    def __init__(self, workdir: Path, access_key: str, secret_key: str, bucket: str | None,
                 ports: dict[str, int]) -> None:
        super().__init__(Path(workdir).resolve(), "weed")
        self.access_key = access_key
        self.secret_key = secret_key
        self.bucket = bucket
        self.ports = dict(ports)
        self.startup_s: float | None = None  # how long the last start took until S3 answered
        self._last_error: Exception | None = None  # why the last readiness probe failed
        # weed's local sockets go into workdir unless that path is too long for a unix socket.
        self._private_sock_dir: Path | None = None
        if len(str(self.workdir / "filer.sock")) > _MAX_UNIX_SOCKET_PATH:
            self._private_sock_dir = Path(tempfile.mkdtemp(prefix="vigil-weed-"))
        self.sock_dir = self._private_sock_dir or self.workdir

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    # ---------------------------------------------------------------- start
    @classmethod
    def start(cls, workdir: Path, access_key: str = "vigil-test", secret_key: str = "vigil-test-secret",
              bucket: str | None = "vigil") -> SeaweedS3:
        """Start ``weed mini`` on free loopback ports; ready when a signed create_bucket/list_buckets works.

        Raises RuntimeError with the log tail if S3 does not answer within 60 s.
        """
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)

        def make() -> SeaweedS3:
            ports = dict(zip(cls._PORT_NAMES, free_ports(len(cls._PORT_NAMES)), strict=True))
            s3 = cls(workdir, access_key, secret_key, bucket, ports)
            s3._write_config()
            return s3

        return cls._launch_first(make, _AUTO_PORT_ATTEMPTS)

    def _write_config(self) -> None:
        identity = {"name": "hub",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"]}
        (self.workdir / "s3.json").write_text(json.dumps({"identities": [identity]}, indent=2) + "\n")

    def command(self) -> list[str]:
        """The full ``weed`` command line."""
        d = self.workdir
        # -logtostderr: glog would otherwise write weed.* log files into /tmp.
        # -admin.port*: the admin server (used by the maintenance worker) still runs with -admin.ui=false
        # and would otherwise take the fixed ports 23646/33646, so two instances would collide.
        return [str(VENV_BIN / "weed"), "-logtostderr", "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                *(f"-{name}={port}" for name, port in self.ports.items()),
                f"-s3.config={d / 's3.json'}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", "-master.telemetry=false", f"-filer.localSocket={self.sock_dir / 'filer.sock'}",
                f"-s3.localSocket={self.sock_dir / 's3.sock'}"]

    def _launch(self) -> None:
        """Start the process and wait for S3 (RuntimeError, child gone and its sockets removed, on failure)."""
        from botocore.exceptions import ClientError

        t0 = time.monotonic()
        self.sock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._spawn(self.command(), cwd=self.workdir)
        probe = self.client(connect_timeout=2, read_timeout=5, max_attempts=1)
        self._last_error = None

        def answers() -> bool:
            try:
                if self.bucket is not None:
                    try:
                        probe.create_bucket(Bucket=self.bucket)
                    except ClientError as e:
                        if e.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                            raise
                else:
                    probe.list_buckets()
                return True
            except Exception as e:  # connection refused, 503 while the filer comes up, ...
                self._last_error = e
                return False

        self._wait_ready(answers, S3_READY_TIMEOUT_S, 0.1)
        self.startup_s = time.monotonic() - t0

    def _failure_details(self) -> str:
        return (f"(last error: {self._last_error!r})\ncommand: {' '.join(self.command())}\n"
                f"{self.log_text(60)}")

    def _bind_failed(self) -> bool:
        # weed checks its ports first ("Port allocation failed: port N ... is not available"), then binds.
        text = self.run_text().lower()
        return "port allocation failed" in text or "address already in use" in text

    # --------------------------------------------------------------- client
    def client(self, connect_timeout: float = 10, read_timeout: float = 60, max_attempts: int = 3) -> Any:
        """A boto3 S3 client for this server (SigV4, path-style, checksums only when required)."""
        import boto3
        import botocore.config

        config = botocore.config.Config(
            signature_version="s3v4", s3={"addressing_style": "path"},
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
            retries={"max_attempts": max_attempts}, connect_timeout=connect_timeout, read_timeout=read_timeout)
        return boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, config=config)

    def list_keys(self, prefix: str = "", bucket: str | None = None) -> dict[str, int]:
        """``{key: size}`` of every object under ``prefix`` (all pages)."""
        bucket = bucket or self.bucket
        if bucket is None:
            raise ValueError("no bucket given")
        keys: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                keys[obj["Key"]] = obj["Size"]
        return keys

    # -------------------------------------------------------------- control
    def stop(self, timeout: float | None = None) -> None:
        """As :meth:`ManagedProcess.stop`, then remove the sockets weed leaves behind."""
        super().stop(timeout)
        self._remove_grpc_sockets()
        if self._private_sock_dir is not None:
            shutil.rmtree(self._private_sock_dir, ignore_errors=True)

    def kill(self) -> None:
        """As :meth:`ManagedProcess.kill`, then remove the sockets weed leaves behind."""
        super().kill()
        self._remove_grpc_sockets()

    def _remove_grpc_sockets(self) -> None:
        """weed leaves ``/tmp/seaweedfs-<component>-grpc-<port>.sock`` behind (even after SIGTERM); remove ours."""
        if self.running:
            return
        for name, port in self.ports.items():
            if name.endswith(".grpc"):
                component = name.split(".", 1)[0]
                Path(f"/tmp/seaweedfs-{component}-grpc-{port}.sock").unlink(missing_ok=True)

    def __repr__(self) -> str:
        return f"<SeaweedS3 {self.endpoint_url} pid={self.pid} {self._state()}>"


# ---------------------------------------------------------------------------- PostgreSQL
POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")


class Postgres(ManagedProcess):
    """A throwaway PostgreSQL cluster (Debian's postgresql-15) on a free loopback port, for the
    hub's shared catalog in tests, benchmarks and the demo.

    PostgreSQL refuses to run as root: the cluster (a temp dir owned by the `postgres` user that
    the Debian package creates) is made with `initdb` and the server runs as that user through
    `setpriv`, which execs it, so our child *is* the postmaster: stopped by its PID (SIGINT, a
    fast shutdown), never by name. Trust authentication for the `vigil` superuser on loopback.
    ``durable=False`` (tests) turns fsync off; benchmarks that claim durability keep it on.

        pg = Postgres.start(tmp_path / "pg")
        url = pg.create_database("hub1")     # -> "postgresql://vigil@127.0.0.1:PORT/hub1"
        pg.stop()
    """

    what = "postgres"
    stop_timeout_s = 20.0

    def __init__(self, workdir: Path, port: int, durable: bool) -> None:
        super().__init__(Path(workdir).resolve(), "postgres")
        self.port = port
        self.durable = durable
        # the cluster lives outside workdir: a pytest temp dir is not traversable by `postgres`
        self.cluster = Path(tempfile.mkdtemp(prefix="vigil-pg-"))
        shutil.chown(self.cluster, "postgres", "postgres")
        self.data = self.cluster / "data"
        self._last_error: Exception | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://vigil@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls, workdir: Path, durable: bool = False) -> Postgres:
        if not (POSTGRES_BIN / "initdb").is_file():
            raise RuntimeError(f"{POSTGRES_BIN / 'initdb'} is missing: install Debian's postgresql (scripts/setup.sh)")

        def make() -> Postgres:
            pg = cls(workdir, free_port(), durable)
            pg._initdb()
            return pg

        return cls._launch_first(make, _AUTO_PORT_ATTEMPTS)

    def _as_postgres(self, *cmd: str) -> list[str]:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *cmd]

    def _initdb(self) -> None:
        done = subprocess.run(self._as_postgres(str(POSTGRES_BIN / "initdb"), "-D", str(self.data), "-A", "trust",
                                                "-U", "vigil", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"),
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stdout[-2000:]}{done.stderr[-2000:]}")

    def command(self) -> list[str]:
        settings = {"listen_addresses": "127.0.0.1", "port": str(self.port),
                    "unix_socket_directories": str(self.cluster), "max_connections": "200",
                    "shared_buffers": "128MB", "logging_collector": "off"}
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        return self._as_postgres(str(POSTGRES_BIN / "postgres"), "-D", str(self.data),
                                 *itertools.chain.from_iterable(("-c", f"{k}={v}") for k, v in settings.items()))

    def _launch(self) -> None:
        import psycopg

        self._spawn(self.command(), cwd=self.cluster)

        def answers() -> bool:
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return True
            except psycopg.OperationalError as exc:
                self._last_error = exc
                return False

        self._wait_ready(answers, 60, 0.1)

    def _failure_details(self) -> str:
        return f"(last error: {self._last_error!r})\n{self.log_text(40)}"

    def _bind_failed(self) -> bool:
        return "could not bind" in self.run_text().lower() or "address already in use" in self.run_text().lower()

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self, timeout: float | None = None) -> None:
        """A fast shutdown (SIGINT: clients disconnected, then a clean stop), SIGKILL after the
        timeout; the cluster's files are removed."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(2)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(self.stop_timeout_s if timeout is None else timeout)
        super().stop(timeout)
        shutil.rmtree(self.cluster, ignore_errors=True)

    def __repr__(self) -> str:
        return f"<Postgres {self.url()} pid={self.pid} {self._state()}>"


TEST_CATALOG_ENV = "VIGIL_TEST_PG_URL"   # set (to a cluster's admin URL) when the tests run on PostgreSQL


def catalog_config_lines() -> list[str]:
    """The `[catalog]` lines of a test hub's config: a fresh PostgreSQL database on the cluster that
    $VIGIL_TEST_PG_URL names (the suite's PostgreSQL pass), or none (SQLite in hub.data_dir)."""
    admin = os.environ.get(TEST_CATALOG_ENV)
    if not admin:
        return []
    import psycopg

    name = f"hub_{os.getpid()}_{next(_DATABASES)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return ["[catalog]", f'url = "{admin.rsplit("/", 1)[0]}/{name}"', ""]


_DATABASES = itertools.count(1)
