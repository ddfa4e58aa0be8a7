#!/usr/bin/env python3
"""The floor under Vigil's recorder: what FFmpeg's RTSP reader costs before Vigil does anything.

One test camera server with K looped 1080p15 mounts (as bench/record_bench.py), then each variant
in turn, `--rounds` times, measured over the same window (CPU of the variant's process tree):

* ffmpeg-fmp4: K `ffmpeg -c copy -f segment` processes writing fMP4 (record_bench's reference);
* pyav-demux:  one process, K threads, `for pkt in container.demux(video): pass`;
* pyav-mux:    the same, plus `mux_one` of every packet into an fMP4 muxer whose output a Python
               object discards (Vigil's movflags and AVIO buffer);
* vigil:       vigil-edge with the K cameras.

Prints CPU-s per camera-hour per round and the mean, and each variant's mean over ffmpeg-fmp4's.
Nothing is asserted. Every process it starts is stopped by its PID.

    .venv/bin/python bench/record_floor.py --cameras 32 --seconds 25 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))
from record_bench import VENV_PY, FfmpegRecorder, VigilRecorder, proc_cpu_s, proc_rss_bytes  # noqa: E402

from tools.cameras import TestCam, ensure_media  # noqa: E402

MIB = 1024 * 1024

# The PyAV variants run in a child interpreter: argv = mode, urls...
PYAV_CODE = r'''
import sys, threading, av
from edge.run import AVIO_BUFFER, MOVFLAGS
mode, urls = sys.argv[1], sys.argv[2:]
OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000", "probesize": "500000", "analyzeduration": "1000000"}
class Discard:
    def write(self, data): return len(data)
    def flush(self): pass
    def tell(self): return 0
def record(url):
    inp = av.open(url, options=OPTIONS)
    video = inp.streams.video[0]
    out = stream = None
    for pkt in inp.demux(video):
        if mode == "demux" or pkt.dts is None:
            continue
        if out is None:
            if not pkt.is_keyframe:
                continue
            out = av.open(Discard(), "w", format="mp4", options={"movflags": MOVFLAGS}, buffer_size=AVIO_BUFFER)
            stream = out.add_stream_from_template(video)
        pkt.stream = stream
        out.mux_one(pkt)
threads = [threading.Thread(target=record, args=(u,), daemon=True) for u in urls]
for t in threads: t.start()
for t in threads: t.join()
'''

FFMPEG_GROUP_CODE = r'''
import signal, subprocess, sys
procs = []
def stop(*_):
    for p in procs: p.terminate()
    for p in procs: p.wait()
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
for i, line in enumerate(sys.stdin.read().splitlines()):
    procs.append(subprocess.Popen(line.split("\0"), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL))
signal.pause()
'''


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    out = [pid]
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            for child in Path(f"/proc/{pid}/task/{tid}/children").read_text().split():
                out += tree(int(child))
    except (FileNotFoundError, ProcessLookupError):
        pass
    return out


def start_variant(name: str, k: int, urls: list[str], workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = open(workdir / "output.log", "wb")  # the child keeps it; closed when it exits
    if name == "vigil":
        rec = VigilRecorder(k, urls, workdir, 10)
        return subprocess.Popen([str(VENV_PY), "-m", "edge.cli", "--config", str(rec.config)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=workdir, env=env)
    if name == "ffmpeg-fmp4":
        ff = FfmpegRecorder(k, urls, workdir, 10, "mp4")
        lines = []
        for url, d in zip(urls, ff.dirs, strict=True):
            d.mkdir(parents=True, exist_ok=True)
            lines.append("\0".join(ff.command(url, d)))
        p = subprocess.Popen([sys.executable, "-c", FFMPEG_GROUP_CODE], stdin=subprocess.PIPE, stdout=log,
                             stderr=subprocess.STDOUT, cwd=workdir)
        assert p.stdin is not None
        p.stdin.write("\n".join(lines).encode())
        p.stdin.close()
        return p
    mode = {"pyav-demux": "demux", "pyav-mux": "mux"}[name]
    return subprocess.Popen([str(VENV_PY), "-c", PYAV_CODE, mode, *urls], stdout=log, stderr=subprocess.STDOUT,
                            cwd=workdir, env=env)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cameras", type=int, default=32, help="camera count K (default 32)")
    ap.add_argument("--seconds", type=float, default=25, help="measurement window per variant (default 25)")
    ap.add_argument("--rounds", type=int, default=2, help="how often each variant is measured (default 2)")
    ap.add_argument("--variants", default="ffmpeg-fmp4,pyav-demux,pyav-mux,vigil",
                    help="comma-separated, from: ffmpeg-fmp4, pyav-demux, pyav-mux, vigil")
    ap.add_argument("--workdir", type=Path, help="default: a new temp dir")
    args = ap.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    root = (args.workdir or Path(tempfile.mkdtemp(prefix="vigil-floor-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    media = ensure_media(root / "media", hd=True)["h264-1080p"]
    names = [f"cam{i + 1:03d}" for i in range(args.cameras)]
    cam = TestCam.start(root / "testcam", [f"{n}=h264file:{media},fps=15" for n in names])
    results: dict[str, list[float]] = {}
    try:
        urls = [cam.url(n) for n in names]
        for rnd in range(args.rounds):
            for name in variants:
                wd = root / name
                shutil.rmtree(wd, ignore_errors=True)
                wd.mkdir()
                proc = start_variant(name, args.cameras, urls, wd)
                try:
                    time.sleep(8 + 0.15 * args.cameras)  # connect, probe, first segments
                    load = os.getloadavg()[0]
                    c0, t0 = sum(proc_cpu_s(p) or 0 for p in tree(proc.pid)), time.monotonic()
                    time.sleep(args.seconds)
                    c1, t1 = sum(proc_cpu_s(p) or 0 for p in tree(proc.pid)), time.monotonic()
                    rss = sum(proc_rss_bytes(p) or 0 for p in tree(proc.pid))
                    alive = proc.poll() is None
                finally:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                        try:
                            proc.wait(20)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait(5)
                cph = (c1 - c0) / (args.cameras * (t1 - t0) / 3600)
                results.setdefault(name, []).append(cph)
                print(f"round {rnd + 1} {name:>12}: {cph:6.2f} CPU-s/camera-hour, RSS {rss / MIB:7.1f} MiB, "
                      f"alive {alive}, load 1-min {load:.2f}", flush=True)
                for sub in (wd / "data" / "segments", *wd.glob("cam-*")):
                    if sub.is_dir():
                        shutil.rmtree(sub, ignore_errors=True)
                time.sleep(2)
    finally:
        cam.stop()
    ref = results.get("ffmpeg-fmp4")
    ref_mean = sum(ref) / len(ref) if ref else None
    print(f"\nK = {args.cameras}, window {args.seconds:g} s, {args.rounds} rounds (CPU-s per camera-hour):")
    for name, xs in results.items():
        mean = sum(xs) / len(xs)
        rel = f"{mean / ref_mean:.2f} × ffmpeg-fmp4" if ref_mean else ""
        print(f"  {name:>12}: {', '.join(f'{x:.2f}' for x in xs)}; mean {mean:.2f}  {rel}")
    print(f"logs in {root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
