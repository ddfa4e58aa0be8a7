"""Thumbnails: a JPEG (320 px wide) of a segment's first frame, a keyframe.

Only the init section and the first fragment (at most THUMBNAIL_READ_MAX of it: its keyframe comes
first, and a long-GOP camera's fragment can be a minute of video) are read from S3, within the
segment's size whatever its fragment index says, and only that one frame is decoded
(PyAV, `mjpeg` encoder). Made on first request and kept in S3 beside the recordings
(`thumbnails/…jpg`, the recording's key with that prefix; retention deletes it with the segment).
"""

from __future__ import annotations

import hashlib
import io
import logging
from fractions import Fraction

import av

from hub.catalog import SegmentRow
from hub.metrics import HubMetrics
from hub.store import ObjectStore
from shared import fragments

log = logging.getLogger(__name__)
THUMBNAIL_WIDTH = 320
THUMBNAIL_READ_MAX = 8 << 20      # bytes of the first fragment read: a 4K keyframe is ~0.5-2 MB


class Undecodable(Exception):
    """The segment's first frame cannot be decoded."""


def thumbnail_key(object_key: str) -> str:
    """`recordings/<node>/…/<name>.mp4` -> `thumbnails/<node>/…/<name>.jpg`."""
    return "thumbnails/" + object_key.removeprefix("recordings/").removesuffix(".mp4") + ".jpg"


def make_thumbnail(head: bytes, width: int = THUMBNAIL_WIDTH) -> bytes:
    """A JPEG of the first frame in `head` (a segment's init section and first fragment)."""
    with av.open(io.BytesIO(head)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "NONE"          # one frame: no frame threads to fill first
        frame = None
        for packet in container.demux(stream):
            decoded = stream.codec_context.decode(packet)
            if decoded:
                frame = decoded[0]
                break
        if frame is None:
            raise ValueError("no frame could be decoded")
    width = min(width, frame.width) // 2 * 2
    height = max(2, round(frame.height * width / frame.width / 2) * 2)
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
    encoder.time_base = Fraction(1, 1)
    encoder.options = {"qmin": "2", "qmax": "5"}
    image = frame.reformat(width=width, height=height, format="yuvj420p")
    return b"".join(bytes(p) for p in encoder.encode(image) + encoder.encode(None))


class Thumbnails:
    def __init__(self, store: ObjectStore, metrics: HubMetrics) -> None:
        self.store = store
        self.metrics = metrics

    def jpeg(self, segment: SegmentRow) -> bytes:
        """The segment's thumbnail, from S3 or made now (and kept). Undecodable when its first frame
        cannot be decoded; StoreError when S3 does not answer."""
        key = thumbnail_key(segment.object_key)
        jpeg = self.store.get_small(key)
        if jpeg is not None:
            return jpeg
        rows = fragments.to_rows(segment.fragments)
        if not rows or not 0 < rows[0][0] < segment.bytes or rows[0][1] <= 0:
            raise Undecodable(f"segment {segment.node}.{segment.seq}'s fragment index does not fit its "
                              f"{segment.bytes} bytes")
        offset, size = rows[0][:2]
        end = min(offset + size, segment.bytes, offset + THUMBNAIL_READ_MAX)
        head = self.store.read_range(segment.object_key, 0, end - 1)
        try:
            jpeg = make_thumbnail(head)
        except (ValueError, av.FFmpegError) as exc:
            log.error("cannot make a thumbnail", extra={"key": segment.object_key, "error": str(exc)})
            raise Undecodable(f"segment {segment.node}.{segment.seq}'s first frame cannot be decoded") from None
        self.store.put_verified(key, jpeg, len(jpeg), hashlib.sha256(jpeg).hexdigest(),
                                {"segment": f"{segment.node}.{segment.seq}"}, content_type="image/jpeg")
        self.metrics.thumbnails_made.inc()
        return jpeg
