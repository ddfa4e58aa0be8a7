#!/usr/bin/env python3
"""Recording benchmark: vigil-edge against one `ffmpeg -c copy -f segment` process per camera.

For each camera count K it starts one test RTSP server (tools/testcam.py) with K looped
1080p15 H.264 mounts (≈4 Mbit/s each), then records all K cameras for a fixed window

* phase "vigil":     one `vigil-edge` process (one thread per camera, fMP4 segments);
* phase "ffmpeg":    K ffmpeg processes writing fragmented MP4 segments, the same format as Vigil
                     (the reference: the ratios and targets are against this phase);
* phase "ffmpeg-ts": K ffmpeg processes writing MPEG-TS segments (the command of
                     /work/shared/docs/components.md; shown for information, `--no-ts` skips it);

one after the other against the same server, and prints CPU-seconds per camera-hour, cameras per
core, RSS and PSS per camera, dropped packets, stall indicators, recorded bytes and the
Vigil/ffmpeg ratios.
See bench/README.md for how to read the output.

    .venv/bin/python bench/record_bench.py --cameras 8,32,64 --seconds 60 [--json out.json]

Standard library only (plus tools/cameras.py). Every process it starts is stopped by its
PID in a `finally`; it never signals anything else.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tools.cameras import TestCam, ensure_media  # noqa: E402

VENV_PY = REPO / ".venv" / "bin" / "python"
VIGIL_EDGE = REPO / ".venv" / "bin" / "vigil-edge"
FFMPEG = shutil.which("ffmpeg") or "/usr/bin/ffmpeg"
TOKEN = "0123456789abcdef0123"
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

# targets from the issue (checked at K = 64; shown for every K)
TARGET_CPU_RATIO = 0.75
TARGET_RSS_PER_CAM_MIB = 10.0
TARGET_GAP_S = 0.5  # a packet gap above this counts as a stall (normal at 15 fps: ≈0.07 s)
TARGET_K = 64


class PhaseError(Exception):
    """A phase could not start (or its recorder died): the benchmark stops with a message."""


# -- /proc readers ------------------------------------------------------------------------------

def proc_cpu_s(pid: int) -> float | None:
    """utime + stime of a process (all its threads), in seconds; None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # fields[0] is field 3 (state)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def proc_pss_bytes(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    parts = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(parts[:8])  # user nice system idle iowait irq softirq steal
    idle = parts[3] + parts[4]
    return float(total - idle), float(total)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dir_bytes(root: Path, suffixes: tuple[str, ...]) -> tuple[int, int]:
    """(total bytes, file count) of files under root whose name ends with one of suffixes."""
    total = count = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if name.endswith(suffixes):
                try:
                    total += os.stat(os.path.join(dirpath, name)).st_size
                    count += 1
                except FileNotFoundError:  # renamed (.part -> .mp4) while we walked
                    pass
    return total, count


def count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as fh:
            return sum(1 for _ in fh)
    except FileNotFoundError:
        return 0


def decode_errors(path: Path) -> tuple[int, str]:
    """Lines ffmpeg prints at -v error while decoding the whole file (0 = clean)."""
    try:
        p = subprocess.run([FFMPEG, "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
                           capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    if p.returncode != 0 and not lines:
        lines = [f"exit status {p.returncode}"]
    return len(lines), "\n".join(lines[:5])


def stop_process(proc: subprocess.Popen | None, grace: float) -> int | None:
    """SIGTERM our own child by its PID, SIGKILL after `grace` seconds. Returns its exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    return proc.returncode


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except FileNotFoundError:
        return "(no output)"


# -- Prometheus text ------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[str, dict[str, float]]:
    """{metric name: {camera label (or ''): value}}, for samples labelled by camera only."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m[2] or ""))
        if set(labels) - {"camera"}:
            continue
        try:
            value = float(m[3])
        except ValueError:
            continue
        out.setdefault(m[1], {})[labels.get("camera", "")] = value
    return out


# -- a recorder under test ------------------------------------------------------------------------

class Recorder:
    """What both phases provide to the measuring loop."""

    name = ""
    k = 0

    def pids(self) -> list[int]:
        raise NotImplementedError

    def cpu_s(self) -> tuple[float, int]:
        """(summed CPU seconds, processes alive)."""
        total, alive = 0.0, 0
        for pid in self.pids():
            c = proc_cpu_s(pid)
            if c is not None:
                total += c
                alive += 1
        return total, alive

    def memory(self) -> tuple[int, int]:
        rss = pss = 0
        for pid in self.pids():
            rss += proc_rss_bytes(pid) or 0
            pss += proc_pss_bytes(pid) or 0
        return rss, pss

    def recorded_bytes(self) -> tuple[int, int]:
        raise NotImplementedError

    def poll(self) -> dict[str, Any]:
        """Extra per-poll figures (vigil: its metrics)."""
        return {}

    def stop(self) -> None:
        raise NotImplementedError


class VigilRecorder(Recorder):
    name = "vigil"

    def __init__(self, k: int, urls: list[str], workdir: Path, segment_seconds: int,
                 command: list[str] | None = None) -> None:
        self.k = k
        self.workdir = workdir
        self.command = command or [str(VIGIL_EDGE)]
        self.data_dir = workdir / "data"
        self.port = free_port()
        self.cameras = [f"cam-{i + 1:03d}" for i in range(k)]
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "vigil-edge.log"
        self.exit_status: int | None = None
        lines = ["[node]", 'id = "bench-edge"', f'data_dir = "{self.data_dir}"', "",
                 "[recording]", f"segment_seconds = {segment_seconds}", "",
                 "[http]", f'listen = "127.0.0.1:{self.port}"', f'token = "{TOKEN}"', ""]
        for cam, url in zip(self.cameras, urls, strict=True):
            lines += ["[[cameras]]", f'id = "{cam}"', f'url = "{url}"', ""]
        self.config = workdir / "edge.toml"
        workdir.mkdir(parents=True, exist_ok=True)
        self.config.write_text("\n".join(lines))

    def start(self, ready_timeout: float) -> float:
        """Start vigil-edge and wait until every camera is recording; returns seconds it took."""
        t0 = time.monotonic()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*self.command, "--config", str(self.config)],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         cwd=self.workdir)
        deadline = t0 + ready_timeout
        last: dict[str, dict[str, float]] = {}
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PhaseError(f"vigil-edge exited with status {self.proc.returncode} during start-up; "
                                 f"log tail ({self.log}):\n{tail(self.log)}")
            try:
                last = self.metrics()
            except (OSError, urllib.error.URLError):
                time.sleep(0.25)
                continue
            up = last.get("vigil_edge_camera_up", {})
            age = last.get("vigil_edge_camera_last_packet_age_seconds", {})
            if all(up.get(c) == 1 for c in self.cameras) and all(c in age for c in self.cameras):
                return time.monotonic() - t0
            time.sleep(0.25)
        up = last.get("vigil_edge_camera_up", {})
        missing = [c for c in self.cameras if up.get(c) != 1]
        raise PhaseError(f"vigil-edge: {len(missing)} of {self.k} cameras not recording after "
                         f"{ready_timeout:.0f} s ({', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}); "
                         f"log tail ({self.log}):\n{tail(self.log)}")

    def metrics(self) -> dict[str, dict[str, float]]:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}/metrics",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return parse_metrics(resp.read().decode())

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []

    def recorded_bytes(self) -> tuple[int, int]:
        return dir_bytes(self.data_dir / "segments", (".mp4", ".part"))

    def poll(self) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            raise PhaseError(f"vigil-edge died while recording (status {self.proc and self.proc.returncode}); "
                             f"log tail ({self.log}):\n{tail(self.log)}")
        return {"metrics": self.metrics()}

    def stop(self) -> None:
        self.exit_status = stop_process(self.proc, 20.0)

    def log_levels(self) -> dict[str, int]:
        """Count of log lines per level, and the distinct warning/error messages."""
        levels: dict[str, int] = {}
        messages: dict[str, int] = {}
        try:
            text = self.log.read_text(errors="replace")
        except FileNotFoundError:
            return {}
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                levels["non-json"] = levels.get("non-json", 0) + 1
                continue
            level = entry.get("level", "?")
            levels[level] = levels.get(level, 0) + 1
            if level in ("warning", "error", "critical"):
                key = f"{level}: {entry.get('msg')}"
                messages[key] = messages.get(key, 0) + 1
        return {"levels": levels, "messages": messages}

    def sample_files(self, n: int) -> list[Path]:
        """n completed segment files from different cameras, not the first file of a camera."""
        picks: list[Path] = []
        for cam in [self.cameras[0], self.cameras[-1], *self.cameras[1:-1]]:
            files = sorted((self.data_dir / "segments" / cam).rglob("*.mp4"))
            if len(files) >= 2:
                picks.append(files[len(files) // 2])
            elif files:
                picks.append(files[0])
            if len(picks) >= n:
                break
        return picks


# The reference writes what Vigil writes: fragmented MP4, one fragment per GOP, with Vigil's
# movflags (edge/run.py MOVFLAGS) except frag_discont, which only matters across Vigil's runs.
FFMPEG_MP4_MOVFLAGS = "+frag_keyframe+delay_moov+default_base_moof+skip_trailer"


class FfmpegRecorder(Recorder):
    """K `ffmpeg -c copy -f segment` processes; `fmt` "mp4" (fMP4, the reference) or "mpegts"."""

    def __init__(self, k: int, urls: list[str], workdir: Path, segment_seconds: int, fmt: str = "mp4") -> None:
        self.fmt = fmt
        self.name = "ffmpeg" if fmt == "mp4" else "ffmpeg-ts"
        self.ext = ".mp4" if fmt == "mp4" else ".ts"
        self.k = k
        self.urls = urls
        self.workdir = workdir
        self.segment_seconds = segment_seconds
        self.procs: list[subprocess.Popen] = []
        self.dirs = [workdir / f"cam-{i + 1:03d}" for i in range(k)]
        self.errs = [workdir / f"cam-{i + 1:03d}.stderr" for i in range(k)]
        self.exit_statuses: list[int | None] = []

    def command(self, url: str, out_dir: Path) -> list[str]:
        return [FFMPEG, "-nostdin", "-loglevel", "warning", "-rtsp_transport", "tcp", "-timeout", "5000000",
                "-i", url, "-map", "0", "-c", "copy", "-f", "segment",
                "-segment_time", str(self.segment_seconds), "-segment_format", self.fmt,
                *(["-segment_format_options", f"movflags={FFMPEG_MP4_MOVFLAGS}"] if self.fmt == "mp4" else []),
                "-reset_timestamps", "1", "-strftime", "1", str(out_dir / f"%Y%m%dT%H%M%S{self.ext}")]

    def start(self, ready_timeout: float) -> float:
        t0 = time.monotonic()
        for url, d, err in zip(self.urls, self.dirs, self.errs, strict=True):
            d.mkdir(parents=True, exist_ok=True)
            with open(err, "wb") as fh:
                self.procs.append(subprocess.Popen(self.command(url, d), stdin=subprocess.DEVNULL,
                                                   stdout=subprocess.DEVNULL, stderr=fh, cwd=self.workdir))
        deadline = t0 + ready_timeout
        while time.monotonic() < deadline:
            dead = [i for i, p in enumerate(self.procs) if p.poll() is not None]
            if dead:
                i = dead[0]
                raise PhaseError(f"ffmpeg for camera {i + 1} exited with status {self.procs[i].returncode} "
                                 f"during start-up; stderr ({self.errs[i]}):\n{tail(self.errs[i])}")
            if all(dir_bytes(d, (self.ext,))[0] > 0 for d in self.dirs):
                return time.monotonic() - t0
            time.sleep(0.25)
        waiting = [str(i + 1) for i, d in enumerate(self.dirs) if dir_bytes(d, (self.ext,))[0] == 0]
        raise PhaseError(f"ffmpeg: {len(waiting)} of {self.k} cameras wrote nothing after {ready_timeout:.0f} s "
                         f"(cameras {', '.join(waiting[:10])}); stderr of the first: "
                         f"{self.errs[int(waiting[0]) - 1]}:\n{tail(self.errs[int(waiting[0]) - 1])}")

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def recorded_bytes(self) -> tuple[int, int]:
        total = count = 0
        for d in self.dirs:
            b, n = dir_bytes(d, (self.ext,))
            total += b
            count += n
        return total, count

    def stderr_lines(self) -> int:
        return sum(count_lines(e) for e in self.errs)

    def stderr_messages(self, limit: int = 8) -> dict[str, int]:
        """Distinct stderr lines (numbers masked) with their counts, most frequent first."""
        counts: dict[str, int] = {}
        for e in self.errs:
            try:
                for line in e.read_text(errors="replace").splitlines():
                    if line.strip():
                        key = re.sub(r"0x[0-9a-f]+|\d+", "N", line.strip())[:160]
                        counts[key] = counts.get(key, 0) + 1
            except FileNotFoundError:
                pass
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:limit])

    def stop(self) -> None:
        for p in self.procs:  # signal all first so they stop in parallel
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
        self.exit_statuses = [p.returncode for p in self.procs]

    def sample_files(self, n: int) -> list[Path]:
        picks = []
        for d in [self.dirs[0], self.dirs[-1]][:n]:
            files = sorted(d.glob(f"*{self.ext}"))
            if files:
                picks.append(files[len(files) // 2])
        return picks


# -- one phase ------------------------------------------------------------------------------------

def measure_phase(rec: Recorder, testcam: TestCam, seconds: float, settle: float, poll_s: float,
                  ready_timeout: float) -> dict[str, Any]:
    k = rec.k
    res: dict[str, Any] = {"tool": rec.name}
    if isinstance(rec, VigilRecorder):
        res["code_version"] = code_version()
        res["command"] = " ".join(rec.command)
    try:
        res["ready_after_s"] = round(rec.start(ready_timeout), 2)  # type: ignore[attr-defined]
        time.sleep(settle)
        polls: list[dict[str, Any]] = []

        def snap() -> dict[str, Any]:
            cpu, alive = rec.cpu_s()
            rss, pss = rec.memory()
            nbytes, nfiles = rec.recorded_bytes()
            s = {"t": time.monotonic(), "wall": time.time(), "cpu": cpu, "alive": alive, "rss": rss,
                 "pss": pss, "bytes": nbytes, "files": nfiles,
                 "testcam_cpu": proc_cpu_s(testcam.pid) or 0.0, "machine": machine_cpu(),
                 "self_cpu": proc_cpu_s(os.getpid()) or 0.0, **rec.poll()}
            if isinstance(rec, FfmpegRecorder):
                s["stderr_lines"] = rec.stderr_lines()
            polls.append(s)
            return s

        s0 = snap()
        res["loadavg_start"] = [round(x, 2) for x in os.getloadavg()]
        end = s0["t"] + seconds
        while True:
            left = end - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(poll_s, left))
            if end - time.monotonic() <= 0.05:
                break
            snap()
        s1 = snap()
        res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    finally:
        rec.stop()

    window = s1["t"] - s0["t"]
    cam_hours = k * window / 3600
    cpu = s1["cpu"] - s0["cpu"]
    busy = (s1["machine"][0] - s0["machine"][0]) / max(1.0, s1["machine"][1] - s0["machine"][1])
    busy_s = (s1["machine"][0] - s0["machine"][0]) / CLK_TCK
    tc_cpu = s1["testcam_cpu"] - s0["testcam_cpu"]
    self_cpu = s1["self_cpu"] - s0["self_cpu"]
    other_cpu = busy_s - cpu - tc_cpu - self_cpu
    nbytes = s1["bytes"] - s0["bytes"]
    res.update({
        "window_s": round(window, 2),
        "alive_at_start": s0["alive"], "alive_at_end": s1["alive"],
        "cpu_s": round(cpu, 2),
        "cpu_s_per_camera_hour": round(cpu / cam_hours, 3),
        "cpu_percent_of_core": round(100 * cpu / window, 1),
        "rss_mib": round(s1["rss"] / MIB, 1),
        "rss_peak_mib": round(max(p["rss"] for p in polls) / MIB, 1),
        "pss_mib": round(s1["pss"] / MIB, 1),
        "pss_peak_mib": round(max(p["pss"] for p in polls) / MIB, 1),
        "rss_mib_per_camera": round(s1["rss"] / MIB / k, 2),
        "pss_mib_per_camera": round(s1["pss"] / MIB / k, 2),
        "recorded_bytes": nbytes,
        "recorded_mbit_s_per_camera": round(nbytes * 8 / 1e6 / window / k, 3),
        "files_total": s1["files"],
        "testcam_cpu_s": round(tc_cpu, 2),
        "testcam_cpu_s_per_camera_hour": round(tc_cpu / cam_hours, 3),
        "testcam_cpu_percent_of_core": round(100 * tc_cpu / window, 1),
        "machine_busy_percent": round(100 * busy, 1),  # of all cores together
        "bench_cpu_percent_of_core": round(100 * self_cpu / window, 1),
        # busy machine time nobody above accounts for: kernel threads (page-cache writeback of the
        # files, softirqs), other processes
        "other_cpu_percent_of_core": round(100 * other_cpu / window, 1),
    })

    if isinstance(rec, VigilRecorder):
        m0, m1 = s0["metrics"], s1["metrics"]

        def total(m: dict, name: str) -> float:
            return sum(m.get(name, {}).get(c, 0.0) for c in rec.cameras)

        def delta(name: str) -> int:
            return int(total(m1, name) - total(m0, name))

        gap0 = m0.get("vigil_edge_packet_gap_max_seconds", {})
        gap1 = m1.get("vigil_edge_packet_gap_max_seconds", {})
        hnd0 = m0.get("vigil_edge_packet_handling_max_seconds", {})
        hnd1 = m1.get("vigil_edge_packet_handling_max_seconds", {})
        rose = {c: gap1.get(c, 0.0) for c in rec.cameras if gap1.get(c, 0.0) > gap0.get(c, 0.0)}
        hrose = {c: hnd1.get(c, 0.0) for c in rec.cameras if hnd1.get(c, 0.0) > hnd0.get(c, 0.0)}
        # when did a camera's gap max rise above the stall threshold (between which polls)
        stall_events = []
        for prev, cur in itertools.pairwise(polls):
            g_prev = prev["metrics"].get("vigil_edge_packet_gap_max_seconds", {})
            g_cur = cur["metrics"].get("vigil_edge_packet_gap_max_seconds", {})
            for c in rec.cameras:
                if g_cur.get(c, 0.0) > g_prev.get(c, 0.0) and g_cur.get(c, 0.0) >= TARGET_GAP_S:
                    stall_events.append({"camera": c, "gap_s": round(g_cur[c], 3),
                                         "between_s": [round(prev["t"] - s0["t"], 1),
                                                       round(cur["t"] - s0["t"], 1)]})
        timeline = []  # per poll interval: cameras with a new gap max, and the highest new value
        for prev, cur in itertools.pairwise(polls):
            g_prev = prev["metrics"].get("vigil_edge_packet_gap_max_seconds", {})
            g_cur = cur["metrics"].get("vigil_edge_packet_gap_max_seconds", {})
            new = [g_cur[c] for c in rec.cameras if g_cur.get(c, 0.0) > g_prev.get(c, 0.0)]
            timeline.append({"between_s": [round(prev["t"] - s0["t"], 1), round(cur["t"] - s0["t"], 1)],
                             "cameras": len(new), "max_s": round(max(new, default=0.0), 3)})
        up_end = m1.get("vigil_edge_camera_up", {})
        res.update({
            "rss_mib_per_camera_marginal": None,  # filled in by the caller (needs the baseline)
            "segments_completed": delta("vigil_edge_segments_written_total"),
            "metric_recorded_bytes": delta("vigil_edge_recorded_bytes_total"),
            "dropped_packets": delta("vigil_edge_dropped_packets_total"),
            "dropped_packets_startup": int(total(m0, "vigil_edge_dropped_packets_total")),
            "invalid_packets": delta("vigil_edge_invalid_packets_total"),
            "invalid_packets_startup": int(total(m0, "vigil_edge_invalid_packets_total")),
            "reconnects": delta("vigil_edge_camera_reconnects_total"),
            "reconnects_startup": int(total(m0, "vigil_edge_camera_reconnects_total")),
            "timestamp_discontinuities": delta("vigil_edge_timestamp_discontinuities_total"),
            "cameras_up_at_end": int(sum(up_end.get(c, 0.0) for c in rec.cameras)),
            "gap_max_s": round(max(gap1.values(), default=0.0), 4),
            "gap_max_camera": max(gap1, key=gap1.get) if gap1 else None,
            "gap_max_at_window_start_s": round(max(gap0.values(), default=0.0), 4),
            "gap_max_risen_in_window_s": round(max(rose.values(), default=0.0), 4),
            "gap_cameras_risen_in_window": len(rose),
            "gap_median_s": round(sorted(gap1.values())[len(gap1) // 2], 4) if gap1 else None,
            "cameras_gap_over_threshold": sum(1 for v in gap1.values() if v >= TARGET_GAP_S),
            "handling_max_s": round(max(hnd1.values(), default=0.0), 4),
            "handling_max_at_window_start_s": round(max(hnd0.values(), default=0.0), 4),
            "handling_max_risen_in_window_s": round(max(hrose.values(), default=0.0), 4),
            "stall_events": stall_events,
            "gap_timeline": timeline,
            "writer_queue_max": int(max(p["metrics"].get("vigil_edge_writer_queue", {}).get("", 0) for p in polls)),
            "exit_status": rec.exit_status,
            "log": rec.log_levels(),
        })
        leftover = dir_bytes(rec.data_dir / "segments", (".part",))[1]
        res["part_files_after_stop"] = leftover
    else:
        assert isinstance(rec, FfmpegRecorder)
        res.update({
            "stderr_lines": s1["stderr_lines"] - s0["stderr_lines"],
            "stderr_lines_startup": s0["stderr_lines"],
            "stderr_lines_total": rec.stderr_lines(),  # including stop
            "stderr_top": rec.stderr_messages(),
            "exit_statuses": sorted({str(s) for s in rec.exit_statuses}),
        })

    checks = []
    for f in rec.sample_files(2):  # type: ignore[attr-defined]
        n, text = decode_errors(f)
        checks.append({"file": str(f), "bytes": f.stat().st_size, "decode_error_lines": n, "first_errors": text})
    res["decode_checks"] = checks
    return res


def code_version() -> str:
    """The commit of the recorder code a phase runs, '+dirty' with the changed files under edge/ shared/
    (the code can change between phases when someone edits the repo during a run)."""
    try:
        head = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "--no-optional-locks", "-C", str(REPO), "status", "--porcelain", "--",
                                "edge", "shared"], capture_output=True, text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    files = [ln[3:] for ln in dirty if ln.strip()]
    return head + (f"+dirty({', '.join(files)})" if files else "")


# -- baseline -------------------------------------------------------------------------------------

def measure_baseline(code: str) -> dict[str, float]:
    """RSS/PSS of an idle project interpreter that ran `code` (the fixed cost of a process)."""
    p = subprocess.Popen([str(VENV_PY), "-c", code + "\nimport sys\nprint('ready', flush=True)\nsys.stdin.read()"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    try:
        line = p.stdout.readline()  # type: ignore[union-attr]
        if line.strip() != b"ready":
            raise PhaseError(f"baseline interpreter failed: {p.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        time.sleep(0.3)
        return {"rss_mib": round((proc_rss_bytes(p.pid) or 0) / MIB, 1),
                "pss_mib": round((proc_pss_bytes(p.pid) or 0) / MIB, 1)}
    finally:
        try:
            p.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


# -- reporting ------------------------------------------------------------------------------------

def fmt(v: Any, nd: int = 2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{nd}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return round(a / b, 3)


def print_k(r: dict[str, Any], seg_s: int) -> None:
    k, v, f = r["k"], r["vigil"], r["ffmpeg"]
    print()
    print(f"=== K = {k} cameras, 1080p15 H.264 ≈4 Mbit/s, segments {seg_s} s, "
          f"window {v['window_s']:.1f} s (vigil) / {f['window_s']:.1f} s (ffmpeg), "
          f"order: {' then '.join(r['order'])} ===")
    print(f"vigil code: {v.get('code_version')}; command: {v.get('command')}")
    rows = [
        ("ready after start (s)", v["ready_after_s"], f["ready_after_s"], None),
        ("processes alive start/end", f"{v['alive_at_start']}/{v['alive_at_end']}",
         f"{f['alive_at_start']}/{f['alive_at_end']}", None),
        ("CPU-s in window", v["cpu_s"], f["cpu_s"], ratio(v["cpu_s"], f["cpu_s"])),
        ("CPU-s per camera-hour", v["cpu_s_per_camera_hour"], f["cpu_s_per_camera_hour"], r["ratios"]["cpu"]),
        ("CPU % of one core", v["cpu_percent_of_core"], f["cpu_percent_of_core"], None),
        ("cameras per core (3600 / CPU-s per cam-h)", v["cameras_per_core"], f["cameras_per_core"], None),
        ("RSS total MiB (end / peak)", f"{v['rss_mib']:.1f} / {v['rss_peak_mib']:.1f}",
         f"{f['rss_mib']:.1f} / {f['rss_peak_mib']:.1f}", None),
        ("RSS MiB per camera (total/K)", v["rss_mib_per_camera"], f["rss_mib_per_camera"], r["ratios"]["rss"]),
        ("RSS MiB per camera, marginal*", v["rss_mib_per_camera_marginal"], f["rss_mib_per_camera"],
         r["ratios"]["rss_marginal"]),
        ("PSS total MiB (end / peak)", f"{v['pss_mib']:.1f} / {v['pss_peak_mib']:.1f}",
         f"{f['pss_mib']:.1f} / {f['pss_peak_mib']:.1f}", None),
        ("PSS MiB per camera (total/K)", v["pss_mib_per_camera"], f["pss_mib_per_camera"], r["ratios"]["pss"]),
        ("PSS MiB per camera, marginal*", v["pss_mib_per_camera_marginal"], f["pss_mib_per_camera"],
         r["ratios"]["pss_marginal"]),
        ("recorded MB in window", round(v["recorded_bytes"] / 1e6, 1), round(f["recorded_bytes"] / 1e6, 1),
         r["ratios"]["bytes"]),
        ("recorded Mbit/s per camera", v["recorded_mbit_s_per_camera"], f["recorded_mbit_s_per_camera"], None),
        ("dropped packets in window", v["dropped_packets"], f"{f['stderr_lines']} stderr lines", None),
        ("dropped before window (start-up)", v["dropped_packets_startup"],
         f"{f['stderr_lines_startup']} stderr lines", None),
        ("invalid packets (window/start-up)", f"{v['invalid_packets']}/{v['invalid_packets_startup']}", "-", None),
        ("reconnects (window/start-up)", f"{v['reconnects']}/{v['reconnects_startup']}", "-", None),
        ("timestamp discontinuities", v["timestamp_discontinuities"], "-", None),
        ("segments completed in window", v["segments_completed"], "-", None),
        ("max packet gap s (all cameras)", v["gap_max_s"], "-", None),
        ("  at window start / risen in win",
         f"{v['gap_max_at_window_start_s']} / {v['gap_max_risen_in_window_s']} "
         f"({v['gap_cameras_risen_in_window']} cams)", "-", None),
        ("  median of per-camera max", v["gap_median_s"], "-", None),
        ("max packet handling s", v["handling_max_s"], "-", None),
        ("  at window start / risen in win", f"{v['handling_max_at_window_start_s']} / "
                                            f"{v['handling_max_risen_in_window_s']}", "-", None),
        ("catalog writer queue max", v["writer_queue_max"], "-", None),
        ("decode check (error lines)", ", ".join(str(c["decode_error_lines"]) for c in v["decode_checks"]) or "none",
         ", ".join(str(c["decode_error_lines"]) for c in f["decode_checks"]) or "none", None),
        ("exit status after SIGTERM", v["exit_status"], ",".join(f["exit_statuses"]), None),
        ("testcam server CPU-s/camera-hour", v["testcam_cpu_s_per_camera_hour"], f["testcam_cpu_s_per_camera_hour"],
         None),
        ("testcam server CPU % of one core", v["testcam_cpu_percent_of_core"], f["testcam_cpu_percent_of_core"], None),
        ("this benchmark's own CPU % of one core", v["bench_cpu_percent_of_core"], f["bench_cpu_percent_of_core"],
         None),
        ("other CPU % of one core (kernel, ...)", v["other_cpu_percent_of_core"], f["other_cpu_percent_of_core"],
         None),
        ("machine busy % (all cores)", v["machine_busy_percent"], f["machine_busy_percent"], None),
        ("load average 1/5/15 at window start", " ".join(map(str, v["loadavg_start"])),
         " ".join(map(str, f["loadavg_start"])), None),
        ("load average 1/5/15 at window end", " ".join(map(str, v["loadavg_end"])),
         " ".join(map(str, f["loadavg_end"])), None),
    ]
    w0 = max(len(row[0]) for row in rows)
    print(f"{'':<{w0}}  {'vigil':>22}  {'ffmpeg fMP4':>22}  {'vigil/ffmpeg':>12}")
    for name, a, b, rt in rows:
        print(f"{name:<{w0}}  {fmt(a):>22}  {fmt(b):>22}  {fmt(rt, 3) if rt is not None else '':>12}")
    ts = r.get("ffmpeg-ts")
    if ts:
        print(f"information, ffmpeg writing MPEG-TS (components.md command), window {ts['window_s']:.1f} s: "
              f"{ts['cpu_s_per_camera_hour']} CPU-s per camera-hour ({ts['cameras_per_core']} cameras per core; "
              f"vigil/TS {fmt(r['ratios']['cpu_vs_ts'], 3)}, fMP4/TS {fmt(r['ratios']['ffmpeg_mp4_vs_ts_cpu'], 3)}), "
              f"RSS {ts['rss_mib_per_camera']} / PSS {ts['pss_mib_per_camera']} MiB per camera, "
              f"{ts['recorded_mbit_s_per_camera']} Mbit/s per camera, {ts['stderr_lines']} stderr lines in window, "
              f"machine busy {ts['machine_busy_percent']} %")
    print(f"* marginal = (vigil total − idle interpreter with edge imported: RSS {r['baseline']['rss_mib']} MiB, "
          f"PSS {r['baseline']['pss_mib']} MiB) / K; ffmpeg column is total/K (no fixed part to remove).")
    if v["stall_events"]:
        ev = ", ".join(f"{e['camera']} {e['gap_s']} s in [{e['between_s'][0]}, {e['between_s'][1]}] s"
                       for e in v["stall_events"][:10])
        print(f"stall events in window (gap ≥ {TARGET_GAP_S} s): {len(v['stall_events'])}: {ev}")
    notable = [t for t in v["gap_timeline"] if t["max_s"] >= 0.15]
    if notable:
        print("new per-camera gap maxima ≥ 0.15 s, by poll interval (s into the window): " + ", ".join(
            f"[{t['between_s'][0]}-{t['between_s'][1]}] {t['cameras']} cams up to {t['max_s']} s" for t in notable))
    msgs = v["log"].get("messages", {})
    if msgs:
        print("vigil log warnings/errors: " + "; ".join(f"{m} ×{n}" for m, n in msgs.items()))
    if f["stderr_top"]:
        print("ffmpeg stderr (whole phase incl. stop): " + "; ".join(f"{m} ×{n}" for m, n in f["stderr_top"].items()))
    if v["part_files_after_stop"]:
        print(f"vigil left {v['part_files_after_stop']} .part files after SIGTERM")
    for c in v["decode_checks"] + f["decode_checks"]:
        if c["decode_error_lines"]:
            print(f"decode errors in {c['file']}: {c['first_errors']}")
    print("targets" + (" (the issue sets them at K = 64)" if k != TARGET_K else "") + ":")
    for name, ok, detail in r["targets"]:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {detail}")


def evaluate(r: dict[str, Any]) -> list[tuple[str, bool, str]]:
    v = r["vigil"]
    cpu = r["ratios"]["cpu"]
    return [
        (f"CPU ratio ≤ {TARGET_CPU_RATIO}", cpu is not None and cpu <= TARGET_CPU_RATIO, f"{cpu}"),
        (f"RSS ≤ {TARGET_RSS_PER_CAM_MIB:g} MiB per camera (marginal)",
         v["rss_mib_per_camera_marginal"] <= TARGET_RSS_PER_CAM_MIB,
         f"{v['rss_mib_per_camera_marginal']} MiB marginal, {v['rss_mib_per_camera']} MiB total/K"),
        ("0 dropped packets in the window (dropped + invalid, no reconnects)",
         v["dropped_packets"] == 0 and v["invalid_packets"] == 0 and v["reconnects"] == 0,
         f"dropped {v['dropped_packets']}, invalid {v['invalid_packets']}, reconnects {v['reconnects']}; "
         f"start-up drops before the first keyframe: {v['dropped_packets_startup']}"),
        (f"no stall: every camera's max packet gap < {TARGET_GAP_S} s (since start, incl. warm-up)",
         v["gap_max_s"] < TARGET_GAP_S,
         f"max {v['gap_max_s']} s ({v['gap_max_camera']}); within the window the max rose to "
         f"{v['gap_max_risen_in_window_s'] or 'no new max'} s"),
        ("(extra) keeps up with real time: recorded bytes ≥ 0.9 × ffmpeg's and no clock-drift re-anchors",
         (r["ratios"]["bytes"] or 0) >= 0.9 and v["timestamp_discontinuities"] == 0,
         f"bytes ratio {r['ratios']['bytes']} ({v['recorded_mbit_s_per_camera']} vs "
         f"{r['ffmpeg']['recorded_mbit_s_per_camera']} Mbit/s per camera), "
         f"{v['timestamp_discontinuities']} timestamp discontinuities/drift re-anchors in the window"),
    ]


# -- main -----------------------------------------------------------------------------------------

def run_k(k: int, order: list[str], args: argparse.Namespace, media: Path, root: Path,
          baseline: dict[str, float]) -> dict[str, Any]:
    kdir = root / f"k{k}"
    kdir.mkdir(parents=True, exist_ok=True)
    names = [f"cam{i + 1:03d}" for i in range(k)]
    mounts = [f"{n}=h264file:{media},fps=15" for n in names]
    print(f"[K={k}] starting testcam with {k} mounts ...", flush=True)
    cam = TestCam.start(kdir / "testcam", mounts)
    result: dict[str, Any] = {"k": k, "order": order, "testcam_pid": cam.pid}
    try:
        urls = [cam.url(n) for n in names]
        ready_timeout = args.ready_timeout or (30 + 0.5 * k)
        for i, tool in enumerate(order):
            if i:
                time.sleep(args.pause)
            rec: Recorder
            if tool == "vigil":
                rec = VigilRecorder(k, urls, kdir / "vigil", args.segment_seconds,
                                    shlex.split(args.vigil_command) if args.vigil_command else None)
            else:
                rec = FfmpegRecorder(k, urls, kdir / tool, args.segment_seconds,
                                     "mp4" if tool == "ffmpeg" else "mpegts")
            print(f"[K={k}] phase {tool}: starting {'vigil-edge' if tool == 'vigil' else f'{k} ffmpeg processes'}, "
                  f"settle {args.settle:g} s, measure {args.seconds:g} s ...", flush=True)
            res = measure_phase(rec, cam, args.seconds, args.settle, args.poll_seconds, ready_timeout)
            print(f"[K={k}] phase {tool}: done ({res['cpu_s_per_camera_hour']} CPU-s/camera-hour, "
                  f"{res['rss_mib']} MiB RSS)", flush=True)
            result[tool] = res
            if not cam.running:
                raise PhaseError(f"testcam server died during the {tool} phase:\n{tail(cam.stderr_path)}")
            if not args.keep_recordings:
                for sub in (["data/segments"] if tool == "vigil" else [f"cam-{j + 1:03d}" for j in range(k)]):
                    shutil.rmtree(kdir / tool / sub, ignore_errors=True)
    finally:
        cam.stop()
    v, f, ts = result["vigil"], result["ffmpeg"], result.get("ffmpeg-ts")
    for res in (v, f, ts):
        if res is not None:  # one core runs 3600 CPU-s an hour
            res["cameras_per_core"] = round(3600 / res["cpu_s_per_camera_hour"], 1) \
                if res["cpu_s_per_camera_hour"] > 0 else None
    v["rss_mib_per_camera_marginal"] = round((v["rss_mib"] - baseline["rss_mib"]) / k, 2)
    v["pss_mib_per_camera_marginal"] = round((v["pss_mib"] - baseline["pss_mib"]) / k, 2)
    result["baseline"] = baseline
    result["ratios"] = {
        "cpu": ratio(v["cpu_s_per_camera_hour"], f["cpu_s_per_camera_hour"]),
        "rss": ratio(v["rss_mib_per_camera"], f["rss_mib_per_camera"]),
        "rss_marginal": ratio(v["rss_mib_per_camera_marginal"], f["rss_mib_per_camera"]),
        "pss": ratio(v["pss_mib_per_camera"], f["pss_mib_per_camera"]),
        "pss_marginal": ratio(v["pss_mib_per_camera_marginal"], f["pss_mib_per_camera"]),
        "bytes": ratio(v["recorded_bytes"], f["recorded_bytes"]),
        # information: against ffmpeg writing MPEG-TS (the components.md command)
        "cpu_vs_ts": ratio(v["cpu_s_per_camera_hour"], ts["cpu_s_per_camera_hour"]) if ts else None,
        "ffmpeg_mp4_vs_ts_cpu": ratio(f["cpu_s_per_camera_hour"], ts["cpu_s_per_camera_hour"]) if ts else None,
    }
    result["targets"] = evaluate(result)
    return result


def print_summary(results: list[dict[str, Any]]) -> None:
    print()
    print("=== summary (per camera; ffmpeg = ffmpeg writing fMP4, the reference; ratio = vigil/ffmpeg) ===")
    hdr = (f"{'K':>3}  {'CPU-s/cam-h v':>13} {'ffmpeg':>8} {'ratio':>6} {'cams/core v':>11} {'ffmpeg':>6} "
           f"{'TS':>6} {'v/TS':>5}  {'RSS MiB/cam v*':>14} {'v/K':>6} "
           f"{'ffmpeg':>7} {'ratio*':>6}  {'PSS MiB/cam v*':>14} {'ffmpeg':>7} {'ratio*':>6}  {'dropped':>7} "
           f"{'gap max s':>9} {'bytes v/f':>9} {'testcam %core':>13}")
    print(hdr)
    for r in results:
        v, f, q = r["vigil"], r["ffmpeg"], r["ratios"]
        ts = r.get("ffmpeg-ts")
        print(f"{r['k']:>3}  {v['cpu_s_per_camera_hour']:>13.2f} {f['cpu_s_per_camera_hour']:>8.2f} "
              f"{fmt(q['cpu'], 3):>6} {fmt(v['cameras_per_core'], 1):>11} {fmt(f['cameras_per_core'], 1):>6} "
              f"{fmt(ts['cpu_s_per_camera_hour'] if ts else None, 1):>6} {fmt(q['cpu_vs_ts'], 2):>5}  "
              f"{v['rss_mib_per_camera_marginal']:>14.2f} {v['rss_mib_per_camera']:>6.2f} "
              f"{f['rss_mib_per_camera']:>7.2f} {fmt(q['rss_marginal'], 3):>6}  "
              f"{v['pss_mib_per_camera_marginal']:>14.2f} {f['pss_mib_per_camera']:>7.2f} "
              f"{fmt(q['pss_marginal'], 3):>6}  {v['dropped_packets']:>7} {v['gap_max_s']:>9.3f} "
              f"{fmt(q['bytes'], 3):>9} "
              f"{v['testcam_cpu_percent_of_core']:>6.1f}/{f['testcam_cpu_percent_of_core']:<6.1f}")
    print("* vigil marginal = (process − idle interpreter with edge imported)/K; v/K = total/K. "
          "testcam %core: during vigil / during ffmpeg. TS = ffmpeg writing MPEG-TS (information), CPU-s/cam-h.")
    for r in results:
        if r["k"] == TARGET_K:
            verdict = "ALL PASS" if all(ok for _, ok, _ in r["targets"]) else "SOME FAIL"
            print(f"targets at K = {TARGET_K} (and the extra real-time check): {verdict}: "
                  + "; ".join(f"{'PASS' if ok else 'FAIL'} {n}" for n, ok, _ in r["targets"]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cameras", default="8,32,64", help="comma-separated camera counts K (default 8,32,64)")
    ap.add_argument("--seconds", type=float, default=60, help="measurement window per phase (default 60)")
    ap.add_argument("--segment-seconds", type=int, default=10, help="segment length for both tools (default 10)")
    ap.add_argument("--workdir", type=Path, help="where to put everything (default: a new temp dir)")
    ap.add_argument("--json", type=Path, help="write every figure to this JSON file")
    ap.add_argument("--media-dir", type=Path, help="loop files (made once, reused; default WORKDIR/media)")
    ap.add_argument("--order", choices=["alternate", "vigil-first", "ffmpeg-first"], default="alternate",
                    help="phase order per K (alternate: vigil first for the 1st K, ffmpeg first for the 2nd, ...)")
    ap.add_argument("--settle", type=float, default=5.0,
                    help="seconds between 'all cameras recording' and the start of the window (default 5)")
    ap.add_argument("--poll-seconds", type=float, default=5.0,
                    help="how often to sample memory and vigil's metrics in the window (default 5)")
    ap.add_argument("--pause", type=float, default=3.0, help="seconds between the two phases (default 3)")
    ap.add_argument("--ready-timeout", type=float, default=0,
                    help="seconds for all cameras to start recording (default 30 + 0.5 × K)")
    ap.add_argument("--vigil-command", default="",
                    help="command that runs the edge instead of .venv/bin/vigil-edge (for A/B experiments); "
                         "'--config FILE' is appended")
    ap.add_argument("--no-ts", action="store_true",
                    help="skip the ffmpeg MPEG-TS phase (information only; the reference is ffmpeg fMP4)")
    ap.add_argument("--keep-recordings", action="store_true",
                    help="keep the segment files (default: deleted after each phase's checks; logs are kept)")
    args = ap.parse_args(argv)
    try:
        ks = [int(x) for x in args.cameras.split(",") if x.strip()]
    except ValueError:
        ap.error(f"--cameras must be comma-separated integers, got {args.cameras!r}")
    if not ks or min(ks) < 1:
        ap.error("--cameras needs at least one K >= 1")
    if args.seconds <= 0 or args.segment_seconds < 2:
        ap.error("--seconds must be > 0 and --segment-seconds >= 2")
    for exe in (VENV_PY, VIGIL_EDGE):
        if not exe.exists():
            print(f"error: {exe} not found (create the project venv first)", file=sys.stderr)
            return 2
    if not shutil.which(FFMPEG):
        print("error: ffmpeg not found on PATH", file=sys.stderr)
        return 2

    root = args.workdir or Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, on_term)

    results: list[dict[str, Any]] = []
    rc = 0
    try:
        print(f"workdir: {root}", flush=True)
        media = ensure_media(args.media_dir or root / "media", hd=True)["h264-1080p"]
        print(f"media: {media}", flush=True)
        baseline = measure_baseline("import av, edge.node")
        baseline_av = measure_baseline("import av")
        print(f"baseline idle interpreter: import av → RSS {baseline_av['rss_mib']} MiB, PSS "
              f"{baseline_av['pss_mib']} MiB; import av, edge.node → RSS {baseline['rss_mib']} MiB, "
              f"PSS {baseline['pss_mib']} MiB", flush=True)
        for i, k in enumerate(ks):
            first = {"alternate": "vigil" if i % 2 == 0 else "ffmpeg", "vigil-first": "vigil",
                     "ffmpeg-first": "ffmpeg"}[args.order]
            # vigil and its reference next to each other; MPEG-TS (information) last
            order = [first, "ffmpeg" if first == "vigil" else "vigil"] + ([] if args.no_ts else ["ffmpeg-ts"])
            r = run_k(k, order, args, media, root, baseline)
            results.append(r)
            print_k(r, args.segment_seconds)
            sys.stdout.flush()
        if len(results) > 1 or results:
            print_summary(results)
    except PhaseError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        rc = 1
    except KeyboardInterrupt:
        print("\ninterrupted; stopped every process this benchmark started", file=sys.stderr)
        rc = 130
    finally:
        if args.json:
            payload = {"params": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                       "workdir": str(root), "machine": {"cpus": os.cpu_count()}, "results": results,
                       "completed": rc == 0}
            args.json.write_text(json.dumps(payload, indent=2, default=str))
            print(f"JSON written to {args.json}")
        print(f"logs and configs kept in {root}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
