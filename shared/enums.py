"""The closed vocabularies of Vigil, each defined once.

Catalogs enforce them with CHECK constraints written into frozen migrations, so a value added
here needs a new migration that rebuilds the table (tests/test_migrations.py fails until it
exists): the edge catalog's `gaps.reason`, the hub catalog's incident, annotation, audit and
export columns. The HTTP API's request and answer schemas take their enums from here too.
"""

from __future__ import annotations

from typing import Literal, get_args

# Why footage is missing, most specific first: where gap rows of an edge overlap, the earlier
# reason wins on the timeline (`hub/timeline.py`).
GapReason = Literal[
    # recorded by the edge (its catalog's `gaps` rows, copied to the hub)
    "auth_failed",          # 401/403
    "stream_not_found",     # 404: wrong path
    "unsupported_codec",    # not H.264/H.265
    "camera_unreachable",   # refused, timed out, stopped sending
    "stream_ended",         # the camera closed the stream
    "timestamp_jump",       # timestamps went backwards or leapt: new run
    "gop_too_long",         # no keyframe within the segment cap: stream re-opened
    "disk_full",            # a write failed; footage dropped until space returned
    "edge_restart",         # the edge was not running
    "quarantined",          # (hub) the hub refused the segment: hash or size mismatch, conflict
    "evicted",              # recorded, then deleted by edge retention before the hub stored it
    # inferred by the hub
    "retention_expired",    # deleted by hub retention
    "not_synced",           # recorded; the edge still holds it
    "edge_offline",         # the node is offline (tail of the range)
    "in_progress",          # the segment being recorded now
    "unknown",              # nothing explains it (yet)
]
GAP_REASONS: tuple[str, ...] = get_args(GapReason)
HUB_GAP_REASONS = ("quarantined", "retention_expired", "not_synced", "edge_offline", "in_progress", "unknown")
EDGE_GAP_REASONS: tuple[str, ...] = tuple(r for r in GAP_REASONS if r not in HUB_GAP_REASONS)
GAP_PRIORITY = {reason: rank for rank, reason in enumerate(GAP_REASONS)}

Severity = Literal["low", "medium", "high", "critical"]        # in rising order (sorting)
SEVERITIES: tuple[str, ...] = get_args(Severity)

IncidentStatus = Literal["open", "investigating", "resolved", "closed"]
INCIDENT_STATUSES: tuple[str, ...] = get_args(IncidentStatus)
HOLDING_STATUSES = ("open", "investigating")                   # these hold their footage

AnnotationKind = Literal["note", "marker", "warning", "evidence"]
ANNOTATION_KINDS: tuple[str, ...] = get_args(AnnotationKind)

# What the audit trail records changes of
AuditEntity = Literal["incident", "annotation", "tag", "export"]
AUDIT_ENTITIES: tuple[str, ...] = get_args(AuditEntity)
AuditAction = Literal["create", "update", "delete"]
AUDIT_ACTIONS: tuple[str, ...] = get_args(AuditAction)

ExportStatus = Literal["queued", "running", "done", "failed", "expired"]
EXPORT_STATUSES: tuple[str, ...] = get_args(ExportStatus)
EXPORT_HOLDING_STATUSES = ("queued", "running", "done")        # these hold their footage
