"""The metadata schema in PostgreSQL's words, migration by migration beside SQLite's (server/db.py).

Each entry takes a PostgreSQL database from version N-1 to N, with the same
number, tables and columns as SQLite's migration N, so that the code above
the store sees one schema.  What differs is only how each engine says it:

- every integer is ``BIGINT`` (SQLite's INTEGER is 64-bit; microsecond times
  pass 2^31 in 35 minutes), ``REAL`` is ``DOUBLE PRECISION``, ``BLOB`` is ``BYTEA``;
- SQLite's ``INTEGER PRIMARY KEY`` (the rowid, numbered by the engine) is an
  identity column;
- the track index's R*Tree (an SQLite virtual table) is a plain table of the
  same integer boxes with a GiST index over them (the search stays exact:
  the box is a coarse filter, every fix is checked after it, geoindex.py).

SQLite's migrations 3 and 7 also convert data an older SQLite file held; a
PostgreSQL database starts at this code, so there its steps are DDL only, and
migration 2's per-fix tables, which migration 3 drops, are never created.
Never edit an entry that has shipped: add the next, beside SQLite's.
"""

from __future__ import annotations

PG_MIGRATIONS: dict[int, str] = {
    1: """
        CREATE TABLE docks (
            dock_id       TEXT PRIMARY KEY,
            token_sha256  TEXT NOT NULL UNIQUE,
            created_utc   TEXT NOT NULL
        );
        CREATE TABLE uploads (
            id            TEXT PRIMARY KEY,
            dock          TEXT NOT NULL REFERENCES docks(dock_id),
            metadata      TEXT NOT NULL,
            device_id     TEXT NOT NULL,
            sequence      BIGINT NOT NULL,
            segment_hash  TEXT NOT NULL,
            length        BIGINT NOT NULL CHECK (length > 0),
            "offset"      BIGINT NOT NULL DEFAULT 0 CHECK ("offset" >= 0 AND "offset" <= length),
            state         TEXT NOT NULL DEFAULT 'receiving' CHECK (state IN ('receiving', 'complete')),
            created_utc   TEXT NOT NULL,
            updated_utc   TEXT NOT NULL
        );
        CREATE INDEX uploads_by_hash ON uploads(segment_hash);
        CREATE TABLE segments (
            segment_hash  TEXT PRIMARY KEY,
            device_id     TEXT NOT NULL,
            sequence      BIGINT NOT NULL,
            prev_hash     TEXT NOT NULL,
            clip_id       TEXT NOT NULL,
            segment_index BIGINT NOT NULL,
            start_utc_us  BIGINT NOT NULL,
            end_utc_us    BIGINT NOT NULL,
            size          BIGINT NOT NULL,
            recovered     BIGINT NOT NULL,
            chain_status  TEXT NOT NULL,
            received_utc  TEXT NOT NULL,
            dock          TEXT NOT NULL,
            blob_key      TEXT NOT NULL,
            receipt       TEXT NOT NULL,
            UNIQUE (device_id, sequence)
        )
    """,
    2: """
        CREATE TABLE segment_tracks (
            segment_hash  TEXT PRIMARY KEY REFERENCES segments(segment_hash),
            status        TEXT NOT NULL,
            fixes         BIGINT NOT NULL,
            note          TEXT NOT NULL DEFAULT ''
        );
        CREATE INDEX segments_by_clip ON segments(clip_id)
    """,
    3: """
        CREATE TABLE track_spans (
            id            BIGINT PRIMARY KEY,
            segment_hash  TEXT NOT NULL REFERENCES segments(segment_hash),
            first_fix     BIGINT NOT NULL CHECK (first_fix >= 0),
            device_id     TEXT NOT NULL,
            clip_id       TEXT NOT NULL,
            records       BYTEA NOT NULL CHECK (octet_length(records) > 0 AND octet_length(records) % 32 = 0),
            UNIQUE (segment_hash, first_fix)
        );
        CREATE TABLE track_span_rtree (
            id       BIGINT PRIMARY KEY,
            min_lat  INTEGER NOT NULL,
            max_lat  INTEGER NOT NULL,
            min_lon  INTEGER NOT NULL,
            max_lon  INTEGER NOT NULL,
            min_t    INTEGER NOT NULL,
            max_t    INTEGER NOT NULL
        );
        CREATE INDEX track_span_rtree_box ON track_span_rtree
            USING gist (box(point(min_lon, min_lat), point(max_lon, max_lat)));
        CREATE INDEX track_span_rtree_time ON track_span_rtree(min_t, max_t)
    """,
    4: """
        CREATE TABLE audit_log (
            seq          BIGINT PRIMARY KEY CHECK (seq >= 1),
            at_utc       TEXT NOT NULL,
            actor        TEXT NOT NULL,
            action       TEXT NOT NULL,
            target       TEXT NOT NULL,
            outcome      TEXT NOT NULL,
            detail       TEXT NOT NULL,
            prev_hash    TEXT NOT NULL CHECK (length(prev_hash) = 64),
            record_hash  TEXT NOT NULL CHECK (length(record_hash) = 64)
        );
        CREATE INDEX audit_log_by_actor ON audit_log(actor, seq);
        CREATE INDEX audit_log_by_target ON audit_log(target, seq);
        CREATE INDEX audit_log_by_time ON audit_log(at_utc);
        CREATE TABLE audit_checkpoints (
            size         BIGINT PRIMARY KEY CHECK (size >= 1),
            head_hash    TEXT NOT NULL CHECK (length(head_hash) = 64),
            at_utc       TEXT NOT NULL,
            key_id       TEXT NOT NULL,
            signature    TEXT NOT NULL
        )
    """,
    5: """
        CREATE TABLE clips (
            clip_id          TEXT PRIMARY KEY,
            device_id        TEXT NOT NULL,
            camera_start_us  BIGINT NOT NULL,
            recorded_utc_us  BIGINT NOT NULL,
            received_utc_us  BIGINT NOT NULL,
            last_utc_us      BIGINT NOT NULL,
            category         TEXT NOT NULL DEFAULT 'unmarked',
            state            TEXT NOT NULL DEFAULT 'held' CHECK (state IN ('held', 'deleting', 'deleted')),
            sweep_id         TEXT,
            deleted_utc      TEXT
        );
        CREATE INDEX clips_by_due ON clips(state, category, recorded_utc_us);
        CREATE INDEX clips_by_device ON clips(device_id, recorded_utc_us);
        CREATE INDEX clips_by_time ON clips(recorded_utc_us);
        CREATE INDEX clips_by_start ON clips(camera_start_us);
        CREATE TABLE clip_stats (
            id          BIGINT PRIMARY KEY CHECK (id = 1),
            longest_us  BIGINT NOT NULL
        );
        INSERT INTO clip_stats (id, longest_us) VALUES (1, 0);
        CREATE TABLE evidence_marks (
            id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            clip_id     TEXT NOT NULL REFERENCES clips(clip_id),
            case_ref    TEXT NOT NULL,
            reason      TEXT NOT NULL,
            marked_by   TEXT NOT NULL,
            marked_utc  TEXT NOT NULL,
            lifted_by   TEXT,
            lifted_utc  TEXT,
            lift_reason TEXT
        );
        CREATE INDEX marks_by_clip ON evidence_marks(clip_id, lifted_utc);
        CREATE TABLE tombstones (
            segment_hash       TEXT PRIMARY KEY,
            device_id          TEXT NOT NULL,
            sequence           BIGINT NOT NULL,
            prev_hash          TEXT NOT NULL,
            clip_id            TEXT NOT NULL,
            segment_index      BIGINT NOT NULL,
            start_utc_us       BIGINT NOT NULL,
            end_utc_us         BIGINT NOT NULL,
            size               BIGINT NOT NULL,
            received_utc       TEXT NOT NULL,
            receipt            TEXT NOT NULL,
            wrapped_key_sha256 TEXT NOT NULL,
            category           TEXT NOT NULL,
            deleted_utc        TEXT NOT NULL,
            sweep_id           TEXT NOT NULL,
            UNIQUE (device_id, sequence)
        );
        CREATE INDEX tombstones_by_clip ON tombstones(clip_id);
        CREATE TABLE device_assignments (
            id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            device_id    TEXT NOT NULL,
            officer      TEXT NOT NULL,
            from_utc_us  BIGINT NOT NULL,
            to_utc_us    BIGINT,
            assigned_by  TEXT NOT NULL,
            assigned_utc TEXT NOT NULL
        );
        CREATE INDEX assignments_by_device ON device_assignments(device_id, from_utc_us);
        CREATE INDEX assignments_by_officer ON device_assignments(officer, from_utc_us);
        CREATE TABLE subject_requests (
            id              TEXT PRIMARY KEY,
            requester       TEXT NOT NULL,
            contact         TEXT NOT NULL DEFAULT '',
            received_date   TEXT NOT NULL,
            logged_by       TEXT NOT NULL,
            logged_utc      TEXT NOT NULL,
            place           TEXT NOT NULL DEFAULT '',
            lat             DOUBLE PRECISION,
            lon             DOUBLE PRECISION,
            radius_m        DOUBLE PRECISION,
            window_from_us  BIGINT NOT NULL,
            window_to_us    BIGINT NOT NULL,
            device_id       TEXT,
            officer         TEXT,
            description     TEXT NOT NULL,
            status          TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'extended', 'closed')),
            due_date        TEXT NOT NULL,
            extension_reason TEXT,
            closed_utc      TEXT,
            closed_by       TEXT,
            outcome         TEXT
        );
        CREATE INDEX requests_by_status ON subject_requests(status, due_date);
        CREATE TABLE sar_holds (
            sar_id     TEXT NOT NULL REFERENCES subject_requests(id),
            clip_id    TEXT NOT NULL REFERENCES clips(clip_id),
            added_by   TEXT NOT NULL,
            added_utc  TEXT NOT NULL,
            why        TEXT NOT NULL,
            PRIMARY KEY (sar_id, clip_id)
        );
        CREATE INDEX sar_holds_by_clip ON sar_holds(clip_id);
        CREATE TABLE sar_exports (
            id              BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
            sar_id          TEXT NOT NULL REFERENCES subject_requests(id),
            created_utc     TEXT NOT NULL,
            created_by      TEXT NOT NULL,
            directory       TEXT NOT NULL,
            manifest_sha256 TEXT NOT NULL,
            clips           BIGINT NOT NULL
        );
        ALTER TABLE segments ADD COLUMN wrapped_key_sha256 TEXT
    """,
    6: """
        CREATE TABLE users (
            username      TEXT PRIMARY KEY,
            role          TEXT NOT NULL,
            full_name     TEXT NOT NULL DEFAULT '',
            password_hash TEXT NOT NULL,
            disabled      BIGINT NOT NULL DEFAULT 0,
            failed_logins BIGINT NOT NULL DEFAULT 0,
            locked_until  TEXT,
            created_utc   TEXT NOT NULL,
            updated_utc   TEXT NOT NULL
        );
        CREATE TABLE user_tokens (
            token_sha256  TEXT PRIMARY KEY,
            username      TEXT NOT NULL REFERENCES users(username),
            created_utc   TEXT NOT NULL,
            expires_utc   TEXT NOT NULL,
            revoked_utc   TEXT,
            purpose       TEXT NOT NULL DEFAULT 'login'
        );
        CREATE INDEX tokens_by_user ON user_tokens(username)
    """,
    7: """
        ALTER TABLE clips ADD COLUMN released_utc_us BIGINT;
        CREATE INDEX clips_arrived_before_start ON clips(recorded_utc_us) WHERE recorded_utc_us < camera_start_us
    """,
    8: "ALTER TABLE clips ADD COLUMN shred_begun_utc TEXT",
    9: """
        ALTER TABLE subject_requests ADD COLUMN source TEXT NOT NULL DEFAULT 'staff';
        ALTER TABLE subject_requests ADD COLUMN client_tag TEXT;
        ALTER TABLE subject_requests ADD COLUMN verified_by TEXT;
        ALTER TABLE subject_requests ADD COLUMN verified_utc TEXT;
        CREATE INDEX public_requests_by_client ON subject_requests(client_tag, logged_utc) WHERE client_tag IS NOT NULL
    """,
}

__all__ = ["PG_MIGRATIONS"]
