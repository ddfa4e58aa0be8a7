#!/usr/bin/env python3
"""Make small pre-encoded video loop files for the test RTSP cameras.

``tools/testcam.py`` serves ``h264file:`` / ``h265file:`` mounts by looping a
raw Annex-B elementary stream forever, which costs almost no CPU compared with
encoding live.  For the loop to be seamless the file must:

* contain no B-frames (decode order == presentation order, so the server can
  set PTS = DTS on every frame);
* be a whole number of GOPs, so the frame after the loop point is a keyframe
  and keyframes keep coming every ``gop_frames`` frames across the loop;
* carry the parameter sets (SPS/PPS, plus VPS for H.265) in front of every
  keyframe, so a client that joins mid-loop can start decoding at the next
  keyframe.

This module uses the system ``ffmpeg`` (libx264 / libx265) and the standard
library only, so it works from the project venv and from ``/usr/bin/python3``.

Library use::

    from testmedia import make_loop
    make_loop(Path("loops/cam.h264"))                      # 640x360, 15 fps, 4 s
    make_loop(Path("loops/cam.h265"), codec="h265")

CLI (makes the standard set and prints the paths)::

    python3 tools/testmedia.py OUT_DIR
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

__all__ = ["STANDARD_LOOPS", "make_activity_loop", "make_loop", "make_standard_set", "make_tone"]

#: Files made by the CLI: file name -> make_loop() keyword arguments.
STANDARD_LOOPS: dict[str, dict] = {
    "h264-360p.h264": dict(codec="h264", size="640x360", fps=15, seconds=4, bitrate="1M"),
    "h265-360p.h265": dict(codec="h265", size="640x360", fps=15, seconds=4, bitrate="1M"),
    "h264-1080p.h264": dict(codec="h264", size="1920x1080", fps=15, seconds=10, bitrate="4M"),
}


def _encoder_args(codec: str, gop: int, bitrate: str) -> list[str]:
    """ffmpeg output arguments for a raw Annex-B stream with fixed GOPs, no B-frames."""
    if codec == "h264":
        return [
            "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
            "-g", str(gop), "-keyint_min", str(gop), "-sc_threshold", "0", "-bf", "0",
            "-b:v", bitrate,
            # Annex-B output already repeats SPS/PPS on each IDR with current
            # ffmpeg/x264; say so explicitly so it doesn't depend on defaults.
            "-x264-params", "repeat-headers=1",
            "-f", "h264",
        ]
    if codec == "h265":
        x265 = ":".join([
            "log-level=error",          # x265 otherwise prints its banner/stats to stderr
            f"keyint={gop}", f"min-keyint={gop}",
            "scenecut=0", "bframes=0",
            "open-gop=0",               # closed GOPs: every keyframe is an IDR
            "repeat-headers=1",         # VPS/SPS/PPS before every keyframe
        ])
        return [
            "-c:v", "libx265", "-preset", "veryfast", "-b:v", bitrate,
            "-x265-params", x265, "-f", "hevc",
        ]
    raise ValueError(f"unsupported codec {codec!r} (expected 'h264' or 'h265')")


def make_loop(
    path: Path | str,
    codec: str = "h264",
    size: str = "640x360",
    fps: int = 15,
    seconds: int = 4,
    gop_frames: int | None = None,
    bitrate: str = "1M",
) -> Path:
    """Create a loopable raw Annex-B ``codec`` file at ``path`` and return its path.

    The picture is ffmpeg's ``testsrc2`` pattern (moving, with a frame counter).
    ``gop_frames`` defaults to ``2 * fps`` (one keyframe every 2 s).  The frame
    count ``seconds * fps`` must be a multiple of ``gop_frames``.

    If ``path`` already exists and is non-empty it is reused as-is (a cache: the
    parameters are not checked, so use distinct file names for distinct
    settings).  The file is written to a temporary name and renamed into place,
    so concurrent callers (e.g. parallel pytest workers) never see a partial file.
    """
    path = Path(path)
    fps = int(fps)
    gop = int(gop_frames) if gop_frames is not None else 2 * fps
    frames = int(seconds) * fps
    if fps <= 0 or gop <= 0 or frames <= 0:
        raise ValueError("fps, seconds and gop_frames must be positive")
    if frames % gop:
        raise ValueError(
            f"{seconds} s at {fps} fps = {frames} frames is not a whole number of "
            f"{gop}-frame GOPs; the loop point would not fall on a keyframe")
    enc = _encoder_args(codec, gop, bitrate)  # validates codec before the cache check

    if path.is_file() and path.stat().st_size > 0:
        return path
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg not found on PATH (apt-get install ffmpeg)")

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    cmd = [
        ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
        "-frames:v", str(frames), "-pix_fmt", "yuv420p", "-an",
        *enc, tmp,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or os.path.getsize(tmp) == 0:
            raise RuntimeError(
                f"ffmpeg failed making {path} (exit {proc.returncode}):\n"
                f"{' '.join(cmd)}\n{proc.stderr.strip()}")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; make the cache readable like a normal file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def make_activity_loop(
    path: Path | str,
    bursts: list[tuple[int, int]],
    seconds: int = 240,
    noise: int = 3,
    size: str = "640x360",
    fps: int = 15,
    gop_frames: int | None = None,
) -> Path:
    """Create a loopable H.264 file of a still scene in which an object moves during `bursts`
    ((start, end) seconds into the loop), for the activity index (tests/test_activity.py).

    The scene is one frame of ``testsrc2`` held still, with temporal sensor noise of strength
    ``noise`` (ffmpeg's ``noise=alls``: 3 is a camera in good light, 6 and more a dim scene); the
    object is a 64x128 ``testsrc2`` patch crossing the picture. x264 encodes it as a camera's VBR
    mode does (CRF 23, at most 2 Mbit/s), so the bytes of the P-frames follow what changes. Without
    bursts it is the still scene alone. Cached like ``make_loop`` (distinct names for distinct
    settings).
    """
    path = Path(path)
    gop = int(gop_frames) if gop_frames is not None else 2 * fps
    frames = int(seconds) * fps
    if frames % gop:
        raise ValueError(f"{seconds} s at {fps} fps is not a whole number of {gop}-frame GOPs")
    if path.is_file() and path.stat().st_size > 0:
        return path
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg not found on PATH (apt-get install ffmpeg)")
    still = f"[0:v]trim=end_frame=1,loop=loop=-1:size=1,setpts=N/{fps}/TB,noise=alls={int(noise)}:allf=t"
    if bursts:
        when = "+".join(f"between(t,{a},{b - 1 / fps:.4f})" for a, b in bursts)
        graph = (f"{still}[bg];[bg][1:v]overlay=x='mod(t*90,640)-64':y='120+80*sin(t/2)':"
                 f"enable='{when}'[v]")
        inputs = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}",
                  "-f", "lavfi", "-i", f"testsrc2=size=64x128:rate={fps}"]
    else:
        graph = still + "[v]"
        inputs = ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={fps}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *inputs,
           "-filter_complex", graph, "-map", "[v]", "-frames:v", str(frames), "-pix_fmt", "yuv420p",
           "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high", "-g", str(gop), "-keyint_min", str(gop),
           "-sc_threshold", "0", "-bf", "0", "-crf", "23", "-maxrate", "2M", "-bufsize", "4M",
           "-x264-params", "repeat-headers=1", "-f", "h264", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or os.path.getsize(tmp) == 0:
            raise RuntimeError(f"ffmpeg failed making {path} (exit {proc.returncode}):\n"
                               f"{' '.join(cmd)}\n{proc.stderr.strip()}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def make_tone(path: Path | str, seconds: int = 4, rate: int = 48000) -> Path:
    """An ADTS AAC-LC loop (a 440 Hz sine, mono) for ``tools/rtspcam.py``; reused if it exists."""
    path = Path(path)
    if path.is_file() and path.stat().st_size > 0:
        return path
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("ffmpeg not found on PATH (apt-get install ffmpeg)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    os.close(fd)
    cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
           "-i", f"sine=frequency=440:sample_rate={rate}:duration={seconds}", "-ac", "1",
           "-c:a", "aac", "-b:a", "48k", "-f", "adts", tmp]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or os.path.getsize(tmp) == 0:
            raise RuntimeError(f"ffmpeg failed making {path} (exit {proc.returncode}):\n{proc.stderr.strip()}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def make_standard_set(out_dir: Path | str) -> dict[str, Path]:
    """Make every file in :data:`STANDARD_LOOPS` under ``out_dir``; name -> path."""
    out_dir = Path(out_dir)
    return {name: make_loop(out_dir / name, **kw) for name, kw in STANDARD_LOOPS.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Make loopable H.264/H.265 test files for tools/testcam.py "
                    "(existing non-empty files are kept).")
    ap.add_argument("out_dir", type=Path, help="directory to write the files into")
    args = ap.parse_args(argv)
    try:
        paths = make_standard_set(args.out_dir)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"testmedia: {exc}", file=sys.stderr)
        return 1
    for p in paths.values():
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
