"""Ingest workers and node leases (schema v10): which process of a hub owns each node's catch-up
and `synced` cursor, when several share one catalog (docs/design/scale.md, "Ingest sharing").

`ingest_workers` holds every live ingest process with the instant its registration expires;
`node_leases` the worker that owns a node and until when. Both are renewed every few seconds by
their worker (`renew_worker`) and taken over by another only once expired (`take_nodes`, one
atomic upsert per node). Every instant is the database's clock (`Sql.clock_us`), so the clocks of
the processes never meet. The cursor itself moves only through `advance_cursor`: never backwards,
and on a shared catalog only under a lease the database still shows unexpired.
"""

from __future__ import annotations

import dataclasses

from hub.catalog.db import Reader, Writer


@dataclasses.dataclass(frozen=True)
class LeaseState:
    """What a worker learns at each renewal."""
    now_us: int              # the database's clock
    workers: int             # live workers, this one included
    nodes: tuple[str, ...]   # the nodes to share: accepted, with a pull URL
    held: tuple[str, ...]    # the nodes this worker holds (just renewed)
    free: tuple[str, ...]    # nodes to share that no live lease holds
    least: int               # the fewest live leases any live worker holds


@dataclasses.dataclass(frozen=True)
class NodeLease:
    node: str
    worker: str
    since_us: int
    expires_us: int


class LeaseReads(Reader):
    def node_leases(self) -> list[NodeLease]:
        """Every lease row, live or expired, by node."""
        return [NodeLease(*r) for r in self.db.tuples(
            "SELECT node, worker, since_us, expires_us FROM node_leases ORDER BY node")]

    def live_workers(self) -> list[str]:
        now = self.db.clock_us()
        return [r[0] for r in self.db.tuples("SELECT worker FROM ingest_workers WHERE expires_us > ? ORDER BY worker",
                                             (now,))]


class LeaseWrites(Writer):
    def renew_worker(self, worker: str, host: str, pid: int, ttl_us: int) -> LeaseState:
        """Register (or renew) this worker, forget expired ones, renew this worker's node leases
        and tell it how the nodes stand."""
        with self._transaction() as db:
            now = db.clock_us()
            db.run("INSERT INTO ingest_workers (worker, host, pid, started_us, expires_us) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT (worker) DO UPDATE SET expires_us = excluded.expires_us",
                   (worker, host, pid, now, now + ttl_us))
            db.run("DELETE FROM ingest_workers WHERE expires_us <= ?", (now,))
            db.run("UPDATE node_leases SET expires_us = ? WHERE worker = ?", (now + ttl_us, worker))
            workers = int(db.value("SELECT count(*) FROM ingest_workers"))
            nodes = tuple(r[0] for r in db.tuples(
                "SELECT id FROM nodes WHERE accepted = 1 AND http_url IS NOT NULL ORDER BY id"))
            leases = {r[0]: (r[1], r[2]) for r in db.tuples("SELECT node, worker, expires_us FROM node_leases")}
            loads = [r[0] for r in db.tuples(
                "SELECT count(l.node) FROM ingest_workers w LEFT JOIN node_leases l ON l.worker = w.worker AND "
                "l.expires_us > ? GROUP BY w.worker", (now,))]
        held = tuple(n for n, (w, _) in sorted(leases.items()) if w == worker)
        free = tuple(n for n in nodes if n not in leases or leases[n][1] <= now)
        return LeaseState(now, workers, nodes, held, free, min(loads, default=0))

    def take_nodes(self, worker: str, nodes: list[str], ttl_us: int, limit: int) -> list[str]:
        """Take up to `limit` of `nodes`, each only if no live lease holds it; the ones taken."""
        taken: list[str] = []
        with self._transaction() as db:
            now = db.clock_us()
            for node in nodes:
                if len(taken) >= limit:
                    break
                if db.run("INSERT INTO node_leases (node, worker, since_us, expires_us) VALUES (?, ?, ?, ?) "
                          "ON CONFLICT (node) DO UPDATE SET worker = excluded.worker, since_us = excluded.since_us, "
                          "expires_us = excluded.expires_us WHERE node_leases.expires_us <= ?",
                          (node, worker, now, now + ttl_us, now)) == 1:
                    taken.append(node)
        return taken

    def release_nodes(self, worker: str, nodes: list[str]) -> None:
        """Give up these leases at once (another worker may take them at its next renewal)."""
        with self._transaction() as db:
            db.run_many("DELETE FROM node_leases WHERE node = ? AND worker = ?", [(n, worker) for n in nodes])

    def leave(self, worker: str) -> None:
        """A worker that stops: its leases and its registration go at once."""
        with self._transaction() as db:
            db.run("DELETE FROM node_leases WHERE worker = ?", (worker,))
            db.run("DELETE FROM ingest_workers WHERE worker = ?", (worker,))

    def advance_cursor(self, node: str, through_seq: int, worker: str | None) -> bool:
        """Set the node's `synced_through` unless that would move it backwards, and, given a
        `worker`, only while that worker's lease of the node is live by the database's clock.
        True if the row now says `through_seq` (the cursor may then be published)."""
        with self._transaction() as db:
            if worker is None:
                return db.run("UPDATE nodes SET synced_through = ? WHERE id = ? AND synced_through <= ?",
                              (through_seq, node, through_seq)) == 1
            now = db.clock_us()
            return db.run("UPDATE nodes SET synced_through = ? WHERE id = ? AND synced_through <= ? AND EXISTS "
                          "(SELECT 1 FROM node_leases WHERE node = ? AND worker = ? AND expires_us > ?)",
                          (through_seq, node, through_seq, node, worker, now)) == 1
