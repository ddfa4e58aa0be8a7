"""HLS playlists (hub/playback.py) from catalog rows, checked against golden text: what players get
must not change by accident."""

from __future__ import annotations

from hub.playback import PlaylistFile, build_playlist

S = 1_000_000
T0 = 1795255200 * S        # 2026-11-21T10:00:00Z


def _file(seq: int, run: int, start_s: float, fragments: int = 2, gop_s: float = 2.0) -> PlaylistFile:
    """A file of `fragments` GOPs of 1000 bytes after a 100-byte init section."""
    return PlaylistFile(f"e1.{seq}", run, 100, [(100 + 1000 * k, 1000, T0 + int((start_s + k * gop_s) * S),
                                                  int(gop_s * S)) for k in range(fragments)])


def _uri(segment_id: str) -> str:
    return f"../../segments/{segment_id}/media.mp4"


FILES = [_file(1, 7, 0), _file(2, 7, 4), _file(3, 8, 20, gop_s=1.5)]   # a gap and a new run before file 3

GOLDEN_VOD = """\
#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:0
#EXT-X-PLAYLIST-TYPE:VOD
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:02.000Z
#EXT-X-MAP:URI="../../segments/e1.1/media.mp4",BYTERANGE="100@0"
#EXTINF:2.000,
#EXT-X-BYTERANGE:1000@1100
../../segments/e1.1/media.mp4
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:04.000Z
#EXT-X-MAP:URI="../../segments/e1.2/media.mp4",BYTERANGE="100@0"
#EXTINF:2.000,
#EXT-X-BYTERANGE:1000@100
../../segments/e1.2/media.mp4
#EXTINF:2.000,
#EXT-X-BYTERANGE:1000@1100
../../segments/e1.2/media.mp4
#EXT-X-DISCONTINUITY
#EXT-X-PROGRAM-DATE-TIME:2026-11-21T10:00:20.000Z
#EXT-X-MAP:URI="../../segments/e1.3/media.mp4",BYTERANGE="100@0"
#EXTINF:1.500,
#EXT-X-BYTERANGE:1000@100
../../segments/e1.3/media.mp4
#EXT-X-ENDLIST
"""


def test_a_past_range_is_a_vod_playlist_from_the_fragment_holding_start() -> None:
    # from 3 s (inside file 1's second fragment) to 21 s (inside file 3's first fragment)
    text = build_playlist(FILES, T0 + 3 * S, T0 + 21 * S, _uri, now=T0 + 3600 * S)
    assert text == GOLDEN_VOD


def test_a_range_reaching_now_is_an_event_playlist_without_endlist() -> None:
    text = build_playlist(FILES, T0 + 3 * S, T0 + 60 * S, _uri, now=T0 + 30 * S)
    lines = text.splitlines()
    assert "#EXT-X-PLAYLIST-TYPE:EVENT" in lines and "#EXT-X-ENDLIST" not in lines
    assert lines.count("#EXTINF:1.500,") == 2      # both of file 3's fragments


def test_files_of_one_run_that_touch_play_on_without_a_discontinuity() -> None:
    text = build_playlist(FILES[:2], T0, T0 + 8 * S, _uri, now=T0 + 3600 * S)
    assert "#EXT-X-DISCONTINUITY" not in text and text.count("#EXT-X-MAP:") == 2
    assert not any(line.startswith("#EXT-X-GAP") for line in text.splitlines())


def test_an_empty_range_is_a_valid_empty_playlist() -> None:
    text = build_playlist(FILES, T0 + 10 * S, T0 + 15 * S, _uri, now=T0 + 3600 * S)
    assert text.splitlines()[-1] == "#EXT-X-ENDLIST" and "#EXTINF" not in text
