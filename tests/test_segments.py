"""SegmentSink and start-up recovery on real files (PyAV muxing a real H.264+AAC clip)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import av
import pytest
from conftest import decode_errors, video_packets

from edge.run import MOVFLAGS
from edge.segments import ClosedSegment, SegmentSink, final_path_of, parse_name, recover_file

T0 = 1_800_000_000_000_000  # µs


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=15",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "8",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-bf", "0", "-c:a", "aac",
                    str(path)], check=True)
    return path


def mux_clip(clip: Path, data_dir: Path, cut_every: int) -> list[ClosedSegment]:
    """Mux the clip through a sink the way a Run does, cutting every `cut_every` keyframes."""
    closed: list[ClosedSegment] = []
    lost: list[tuple[int, int, str]] = []
    sink = SegmentSink(camera="cam", run_id=7, data_dir=data_dir, video_codec="h264", audio_codec="aac",
                       on_closed=closed.append, on_lost=lambda *a: lost.append(a))
    with av.open(str(clip)) as inp:
        out = av.open(sink, "w", format="mp4", options={"movflags": MOVFLAGS})
        v, a = inp.streams.video[0], inp.streams.audio[0]
        streams = {v.index: out.add_stream_from_template(v), a.index: out.add_stream_from_template(a)}
        keyframes = 0
        for pkt in inp.demux(v, a):
            if pkt.size == 0 or pkt.dts is None:
                continue
            if pkt.stream.index == v.index and pkt.is_keyframe:
                at = round(pkt.dts * pkt.time_base * 1_000_000)
                sink.keyframe(at, T0 + at, cut=keyframes % cut_every == 0)
                keyframes += 1
            pkt.stream = streams[pkt.stream.index]
            out.mux_one(pkt)
        out.close()
    sink.finish(T0 + 8_000_000)
    for seg in closed:
        os.fsync(seg.fd)
        os.close(seg.fd)
    assert not lost
    return closed


def test_sink_splits_into_self_contained_continuous_files(clip: Path, tmp_path: Path) -> None:
    segments = mux_clip(clip, tmp_path, cut_every=2)
    assert len(segments) == 2  # 4 GOPs of 2 s, a new file every 2 GOPs
    previous_end = None
    for seg in segments:
        assert seg.part_path.name.endswith(".mp4.part")
        assert parse_name(seg.part_path) == (seg.start_us, 7)
        assert decode_errors(seg.part_path) == ""
        first_is_key, first, last_end, _ = video_packets(seg.part_path)
        assert first_is_key
        if previous_end is not None:  # timestamps run on across the files of a run
            assert abs(first - previous_end) < 1 / 15 + 1e-6
        previous_end = last_end
        data = seg.part_path.read_bytes()
        import hashlib
        assert len(data) == seg.bytes and hashlib.sha256(data).hexdigest() == seg.sha256
        for offset, _size, _start, _duration in seg.fragments.tolist():
            assert data[offset + 4:offset + 8] == b"moof"
        assert seg.fragments[:, 1].sum() + seg.init_bytes == seg.bytes
    assert segments[0].end_us == segments[1].start_us


def test_recovery_keeps_whole_fragments_and_cuts_a_torn_tail(clip: Path, tmp_path: Path) -> None:
    seg = mux_clip(clip, tmp_path, cut_every=100)[0]
    assert len(seg.fragments) == 4
    # a crash in the middle of the third fragment
    torn_at = int(seg.fragments[2][0] + seg.fragments[2][1] // 2)
    os.truncate(seg.part_path, torn_at)
    recovered = recover_file(seg.part_path, "cam")
    assert recovered is not None and recovered.recovered
    assert recovered.bytes == seg.fragments[2][0] == seg.part_path.stat().st_size
    assert recovered.fragments[:, :2].tolist() == seg.fragments[:2, :2].tolist()
    assert recovered.start_us == seg.start_us
    assert abs(recovered.end_us - int(seg.fragments[2][2])) <= 1_000_000 // 15 + 1
    assert decode_errors(seg.part_path) == ""
    assert final_path_of(seg.part_path).name == seg.part_path.name[: -len(".part")]


def test_recovery_removes_a_file_with_no_whole_fragment(clip: Path, tmp_path: Path) -> None:
    seg = mux_clip(clip, tmp_path, cut_every=100)[0]
    os.truncate(seg.part_path, int(seg.fragments[0][0]) + 100)
    assert recover_file(seg.part_path, "cam") is None
    assert not seg.part_path.exists()
