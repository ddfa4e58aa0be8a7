"""Activity series: what the edges measured of each stored segment (shared/activity.py).

`activity_rows` reads a camera's series overlapping [start, end) in one range scan of the
`segment_activity` primary key (node, camera, start_s, seq), bounded below by the camera's longest
segment as `segments_overlapping` is: a camera's day of 10-s segments is 8,640 short rows read in
key order. A series is deleted with its segment (a trigger, schema v9).
"""

from __future__ import annotations

from hub.catalog.db import Reader


class ActivityReads(Reader):
    def activity_rows(self, node: str, camera: str, start_us: int, end_us: int) -> list[tuple[int, bytes]]:
        """(first UTC second, series BLOB) of a camera's stored segments overlapping [start, end), by
        start; segments without a series are left out."""
        return self.db.tuples(  # type: ignore[return-value]
            "SELECT start_s, series FROM segment_activity WHERE node = ? AND camera = ? AND start_s < ? "
            "AND start_s >= ? - coalesce((SELECT max_segment_us FROM cameras WHERE node = ? AND camera = ?), 0) "
            "/ 1000000 - 1 ORDER BY start_s, seq",
            (node, camera, -(-end_us // 1_000_000), start_us // 1_000_000, node, camera))
