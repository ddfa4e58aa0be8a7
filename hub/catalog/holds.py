"""Evidence holds: the footage an incident or an export keeps from retention.

The view `holds_in_force (kind, ref, node, camera, start_us, end_us)` (schema v3) lists every hold
in force: the camera links of incidents that are open, investigating or explicitly held, and the
cameras and range of exports until they expire. Hub retention, the API and the hold sets the hub
publishes to the edges all read it.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

from hub.catalog.db import Reader

# a segment row `s` is held when a hold in force overlaps it
HOLDING_SQL = ("EXISTS (SELECT 1 FROM holds_in_force h WHERE h.node = s.node AND h.camera = s.camera "
               "AND h.start_us < s.end_us AND h.end_us > s.start_us)")


class HoldSpan(NamedTuple):
    kind: str                # incident | export
    ref: str                 # the incident id (as text) or the export id
    start_us: int
    end_us: int


@dataclasses.dataclass(frozen=True)
class HoldRow:
    """A hold in force with what holds it."""
    kind: str
    ref: str
    node: str
    camera: str
    start_us: int
    end_us: int
    title: str               # the incident's title or the export's reason
    status: str | None       # the incident's status
    hold: bool               # the incident's explicit hold
    expires_us: int | None   # the export's expiry


class HoldReads(Reader):
    def holds(self, node: str | None = None, camera: str | None = None) -> list[HoldRow]:
        """Every hold in force (of a node, or one camera), by camera and start."""
        where, args = "", ()
        if node is not None:
            where, args = (" WHERE h.node = ? AND h.camera = ?", (node, camera)) if camera else (" WHERE h.node = ?",
                                                                                                 (node,))
        rows = self.db.rows(
            "SELECT h.kind, h.ref, h.node, h.camera, h.start_us, h.end_us, coalesce(i.title, e.reason, '') AS title, "
            "i.status, coalesce(i.hold, 0) AS hold, e.expires_us FROM holds_in_force h "
            "LEFT JOIN incidents i ON h.kind = 'incident' AND CAST(i.id AS TEXT) = h.ref "
            "LEFT JOIN exports e ON h.kind = 'export' AND e.id = h.ref"
            + where + " ORDER BY h.node, h.camera, h.start_us, h.kind, h.ref", args)
        return [HoldRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8]), r[9]) for r in rows]

    def holds_for(self, node: str, camera: str, start_us: int, end_us: int) -> list[HoldSpan]:
        """The holds on a camera overlapping [start, end), by start."""
        return [HoldSpan(*r) for r in self.db.rows(
            "SELECT kind, ref, start_us, end_us FROM holds_in_force WHERE node = ? AND camera = ? AND start_us < ? "
            "AND end_us > ? ORDER BY start_us", (node, camera, end_us, start_us))]

    def node_holds(self) -> dict[str, list[tuple[str, int, int]]]:
        """node -> its held (camera, start_us, end_us) ranges, overlapping ones merged."""
        out: dict[str, list[tuple[str, int, int]]] = {}
        rows = self.db.rows("SELECT node, camera, start_us, end_us FROM holds_in_force "
                            "ORDER BY node, camera, start_us")
        for node, camera, a, b in rows:
            ranges = out.setdefault(node, [])
            if ranges and ranges[-1][0] == camera and a <= ranges[-1][2]:
                ranges[-1] = (camera, ranges[-1][1], max(b, ranges[-1][2]))
            else:
                ranges.append((camera, a, b))
        return out
