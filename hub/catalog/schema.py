"""The hub catalog's schema: migrations in order, each frozen once released.

`PRAGMA user_version` says how many have run (`shared/sqlite.py`). A released migration is never
edited (tests/test_migrations.py pins its text): a change is a new step. A new value of an enum
in `shared/enums.py` that a CHECK constraint lists needs a step that rebuilds the table with the
longer list, as v4 does for the audit trail's entities.
"""

from __future__ import annotations

SCHEMA_V1 = """
-- Every edge the hub has heard of, trusted or not.
CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    accepted INTEGER NOT NULL CHECK (accepted IN (0, 1)),  -- 1: the hub pulls from it
    source TEXT NOT NULL CHECK (source IN ('config', 'first_sight', 'announced')),
    http_url TEXT,                   -- where the hub pulls from (pinned once known)
    advertised_url TEXT,             -- what the node last advertised (may differ: logged, not followed)
    state TEXT NOT NULL DEFAULT 'unknown' CHECK (state IN ('unknown', 'online', 'offline')),
    session INTEGER NOT NULL DEFAULT 0,
    version TEXT,
    cameras TEXT NOT NULL DEFAULT '[]',  -- JSON list of camera ids
    disk_free_bytes INTEGER,
    disk_total_bytes INTEGER,
    backlog_segments INTEGER,
    backlog_bytes INTEGER,
    first_seen_us INTEGER,
    last_seen_us INTEGER,
    synced_through INTEGER NOT NULL DEFAULT 0,  -- every listed segment up to here is stored or quarantined
    gaps_rev INTEGER NOT NULL DEFAULT 0,        -- edge gap revisions copied so far
    last_error TEXT
);

-- One row per stored object; (node, seq) names a segment everywhere.
CREATE TABLE segments (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    camera TEXT NOT NULL,
    run_id INTEGER NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    sha256 TEXT NOT NULL CHECK (length(sha256) = 64),
    init_bytes INTEGER NOT NULL,
    video_codec TEXT NOT NULL,
    audio_codec TEXT,
    fragments BLOB NOT NULL,         -- little-endian int64 [n, 4]: offset, size, start_us, duration_us
    recovered INTEGER NOT NULL DEFAULT 0,
    object_key TEXT NOT NULL UNIQUE,
    stored_us INTEGER NOT NULL,
    UNIQUE (node, seq)
);
CREATE INDEX segments_camera_start ON segments (node, camera, start_us);

-- Why footage is missing, as the edges reported it (copied by revision).
CREATE TABLE gaps (
    node TEXT NOT NULL,
    edge_id INTEGER NOT NULL,
    camera TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    rev INTEGER NOT NULL,
    PRIMARY KEY (node, edge_id)
);
CREATE INDEX gaps_camera_start ON gaps (node, camera, start_us);

-- Segments the hub gave up on (hash mismatch, missing file, conflicting object): never stored.
CREATE TABLE quarantine (
    node TEXT NOT NULL,
    seq INTEGER NOT NULL,
    camera TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    quarantined_us INTEGER NOT NULL,
    PRIMARY KEY (node, seq)
);

-- The latest retained status of each camera.
CREATE TABLE camera_status (
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    status TEXT NOT NULL,            -- the message, JSON
    updated_us INTEGER NOT NULL,
    PRIMARY KEY (node, camera)
);
"""


SCHEMA_V2 = """
-- Retention marks a row before deleting its object, and the row after (crash-safe order).
ALTER TABLE segments ADD COLUMN deleting INTEGER NOT NULL DEFAULT 0;
-- Range queries (segments, timelines) read a camera's spans from the index alone: a 24-hour
-- timeline touches a few index pages instead of ~6 MB of table pages (bench/README.md, "Hub API").
DROP INDEX segments_camera_start;
CREATE INDEX segments_camera_span ON segments (node, camera, start_us, end_us, run_id, deleting);
-- When a quarantined segment was recorded, so the timeline can say why it is missing.
ALTER TABLE quarantine ADD COLUMN start_us INTEGER;
ALTER TABLE quarantine ADD COLUMN end_us INTEGER;

-- Every camera the hub holds footage of (or status for), with its stored extent.
CREATE TABLE cameras (
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    first_start_us INTEGER,
    last_end_us INTEGER,
    expired_before_us INTEGER NOT NULL DEFAULT 0,  -- hub retention deleted unheld footage before this
    max_segment_us INTEGER NOT NULL DEFAULT 0,     -- the longest segment: how far back a range query looks
    PRIMARY KEY (node, camera)
);
INSERT INTO cameras (node, camera, first_start_us, last_end_us, max_segment_us)
    SELECT node, camera, min(start_us), max(end_us), max(end_us - start_us) FROM segments GROUP BY node, camera;
INSERT OR IGNORE INTO cameras (node, camera) SELECT node, camera FROM camera_status;

CREATE TABLE tags (
    name TEXT PRIMARY KEY,
    colour TEXT NOT NULL DEFAULT '#808080' CHECK (colour GLOB '#[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'),
    category TEXT NOT NULL DEFAULT '',
    created_us INTEGER NOT NULL
);

CREATE TABLE incidents (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    severity TEXT NOT NULL CHECK (severity IN ('low', 'medium', 'high', 'critical')),
    severity_rank INTEGER NOT NULL,  -- low 1 ... critical 4, for sorting
    status TEXT NOT NULL CHECK (status IN ('open', 'investigating', 'resolved', 'closed')),
    assignee TEXT,
    hold INTEGER NOT NULL DEFAULT 0 CHECK (hold IN (0, 1)),  -- explicit evidence hold, whatever the status
    start_us INTEGER NOT NULL,       -- envelope of the camera links
    end_us INTEGER NOT NULL,
    created_us INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated_us INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE INDEX incidents_status ON incidents (status, updated_us);
CREATE INDEX incidents_updated ON incidents (updated_us);

-- An incident covers one or more camera + time ranges; open, investigating or held incidents
-- hold the segments overlapping them from retention.
CREATE TABLE incident_links (
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL CHECK (end_us > start_us)
);
CREATE INDEX incident_links_incident ON incident_links (incident_id);
CREATE INDEX incident_links_camera ON incident_links (node, camera, start_us);

CREATE TABLE incident_tags (
    incident_id INTEGER NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    tag TEXT NOT NULL REFERENCES tags (name),
    PRIMARY KEY (incident_id, tag)
);
CREATE INDEX incident_tags_tag ON incident_tags (tag);

CREATE TABLE annotations (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL CHECK (end_us >= start_us),  -- = start_us for an instant
    kind TEXT NOT NULL CHECK (kind IN ('note', 'marker', 'warning', 'evidence')),
    text TEXT NOT NULL DEFAULT '',
    incident_id INTEGER REFERENCES incidents (id) ON DELETE SET NULL,
    created_us INTEGER NOT NULL,
    created_by TEXT NOT NULL,
    updated_us INTEGER NOT NULL,
    updated_by TEXT NOT NULL
);
CREATE INDEX annotations_camera ON annotations (node, camera, start_us);
CREATE INDEX annotations_incident ON annotations (incident_id);

-- Who changed what, when: every write of the incident API, never updated or deleted.
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at_us INTEGER NOT NULL,
    actor TEXT NOT NULL,             -- the token's name
    action TEXT NOT NULL,            -- create | update | delete
    entity TEXT NOT NULL CHECK (entity IN ('incident', 'annotation', 'tag')),
    entity_id TEXT NOT NULL,
    incident_id INTEGER,             -- the incident the change belongs to, if any
    changes TEXT NOT NULL            -- JSON {field: [old, new]}
);
CREATE INDEX audit_incident ON audit (incident_id, id);

-- Full-text index over each incident: rowid = incidents.id; rebuilt for an incident whenever it,
-- its tags or its annotations change (in the same transaction).
CREATE VIRTUAL TABLE incident_fts USING fts5 (
    title, description, annotations, tags, tokenize = 'unicode61 remove_diacritics 2'
);
"""


SCHEMA_V3 = """
-- Evidence exports (hub/exports.py): a job per request, kept after it is done until it expires.
CREATE TABLE exports (
    id TEXT PRIMARY KEY,             -- 20261129T043000Z-1a2b3c4d; objects under exports/<id>/
    status TEXT NOT NULL CHECK (status IN ('queued', 'running', 'done', 'failed', 'expired')),
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL CHECK (end_us > start_us),
    reason TEXT NOT NULL,
    requester TEXT NOT NULL,         -- the token's name
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL,     -- then its objects are deleted and its hold ends
    progress REAL NOT NULL DEFAULT 0,
    error TEXT,                      -- why it failed
    result TEXT                      -- JSON: files, source bytes, manifest sha256 (when done)
);
CREATE INDEX exports_status ON exports (status, created_us);
CREATE TABLE export_cameras (
    export_id TEXT NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    position INTEGER NOT NULL,
    PRIMARY KEY (export_id, node, camera)
);
CREATE INDEX export_cameras_camera ON export_cameras (node, camera);

-- Every evidence hold in force: incidents that are open, investigating or held, and exports
-- until they expire. Hub retention, the API and the holds the edges get all read this view.
CREATE VIEW holds_in_force AS
    SELECT 'incident' AS kind, CAST(i.id AS TEXT) AS ref, l.node, l.camera, l.start_us, l.end_us
      FROM incident_links l JOIN incidents i ON i.id = l.incident_id
     WHERE i.status IN ('open', 'investigating') OR i.hold = 1
    UNION ALL
    SELECT 'export', e.id, c.node, c.camera, e.start_us, e.end_us
      FROM export_cameras c JOIN exports e ON e.id = c.export_id
     WHERE e.status IN ('queued', 'running', 'done');
"""


SCHEMA_V4 = """
-- Exports are audited (created, done, failed, expired): the audit entity list grows by 'export'.
-- SQLite cannot change a CHECK in place: the table is rebuilt, ids and rows kept.
CREATE TABLE audit_v4 (
    id INTEGER PRIMARY KEY,
    at_us INTEGER NOT NULL,
    actor TEXT NOT NULL,             -- the token's name, or vigil-hub for what the hub did itself
    action TEXT NOT NULL CHECK (action IN ('create', 'update', 'delete')),
    entity TEXT NOT NULL CHECK (entity IN ('incident', 'annotation', 'tag', 'export')),
    entity_id TEXT NOT NULL,
    incident_id INTEGER,             -- the incident the change belongs to, if any
    changes TEXT NOT NULL            -- JSON {field: [old, new]}
);
INSERT INTO audit_v4 (id, at_us, actor, action, entity, entity_id, incident_id, changes)
    SELECT id, at_us, actor, action, entity, entity_id, incident_id, changes FROM audit;
DROP TABLE audit;
ALTER TABLE audit_v4 RENAME TO audit;
CREATE INDEX audit_incident ON audit (incident_id, id);
CREATE INDEX audit_entity ON audit (entity, id);
"""


SCHEMA_V5 = """
-- An export takes a range per camera, as an incident does (the export's own start and end become
-- the envelope): export_cameras gets the range, and the holds view reads it.
DROP VIEW holds_in_force;
CREATE TABLE export_cameras_v5 (
    export_id TEXT NOT NULL REFERENCES exports (id) ON DELETE CASCADE,
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    position INTEGER NOT NULL,
    start_us INTEGER NOT NULL,
    end_us INTEGER NOT NULL CHECK (end_us > start_us),
    PRIMARY KEY (export_id, node, camera)
);
INSERT INTO export_cameras_v5 (export_id, node, camera, position, start_us, end_us)
    SELECT c.export_id, c.node, c.camera, c.position, e.start_us, e.end_us
      FROM export_cameras c JOIN exports e ON e.id = c.export_id;
DROP TABLE export_cameras;
ALTER TABLE export_cameras_v5 RENAME TO export_cameras;
CREATE INDEX export_cameras_camera ON export_cameras (node, camera);
CREATE VIEW holds_in_force AS
    SELECT 'incident' AS kind, CAST(i.id AS TEXT) AS ref, l.node, l.camera, l.start_us, l.end_us
      FROM incident_links l JOIN incidents i ON i.id = l.incident_id
     WHERE i.status IN ('open', 'investigating') OR i.hold = 1
    UNION ALL
    SELECT 'export', e.id, c.node, c.camera, c.start_us, c.end_us
      FROM export_cameras c JOIN exports e ON e.id = c.export_id
     WHERE e.status IN ('queued', 'running', 'done');
"""


SCHEMA_V6 = """
-- Playback tokens name their issuer and when they were made; a row here revokes the tokens an
-- issuer (an API token's name, or '*' for every issuer) made before `before_us`.
CREATE TABLE playback_revocations (
    issuer TEXT PRIMARY KEY,
    before_us INTEGER NOT NULL
);
"""


SCHEMA_V7 = """
-- Sign-in sessions of the web page (hub/catalog/sessions.py): the sha256 of the cookie's random
-- id, the API token's name it stands for, the CSRF token writes must carry, and its expiry.
CREATE TABLE sessions (
    id_sha256 TEXT PRIMARY KEY,
    token_name TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_us);
"""


SCHEMA_V8 = """
-- A node's last reported Litestream replication state (JSON {ok, lag_seconds, error}, or NULL when
-- it replicates nothing), for the fleet view.
ALTER TABLE nodes ADD COLUMN replica TEXT;
"""


SCHEMA_V9 = """
-- Each stored segment's activity series as its edge measured it (shared/activity.py): little-endian
-- uint32 [n, 2], non-keyframe and keyframe video bytes per UTC second from second `start_s` on.
-- Apart from `segments` and clustered by camera and time, so a camera's day is one range scan.
CREATE TABLE segment_activity (
    node TEXT NOT NULL,
    camera TEXT NOT NULL,
    start_s INTEGER NOT NULL,        -- the UTC second of the first row: the segment's start_us / 1e6
    seq INTEGER NOT NULL,
    series BLOB NOT NULL,
    PRIMARY KEY (node, camera, start_s, seq)
) WITHOUT ROWID;
-- A segment's series goes with its row (retention).
CREATE TRIGGER segment_activity_deleted AFTER DELETE ON segments BEGIN
    DELETE FROM segment_activity
     WHERE node = old.node AND camera = old.camera AND start_s = old.start_us / 1000000 AND seq = old.seq;
END;
"""


SCHEMA_V10 = """
-- Ingest workers of a hub whose processes share one catalog, and the node each owns
-- (hub/catalog/leases.py): a worker's registration and each node lease expire unless renewed;
-- instants are the database's clock. A one-process hub (SQLite) leaves both empty.
CREATE TABLE ingest_workers (
    worker TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
);
CREATE TABLE node_leases (
    node TEXT PRIMARY KEY,
    worker TEXT NOT NULL,
    since_us INTEGER NOT NULL,
    expires_us INTEGER NOT NULL
);
CREATE INDEX node_leases_worker ON node_leases (worker);
"""


MIGRATIONS = [SCHEMA_V1, SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5, SCHEMA_V6, SCHEMA_V7, SCHEMA_V8, SCHEMA_V9,
              SCHEMA_V10]
