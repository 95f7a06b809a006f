"""The schema's numbered migrations run on both engines and reach the same version, tables and columns."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from openbwv.server.db import MIGRATIONS, SCHEMA_VERSION, MetadataStore
from openbwv.server.errors import ConfigError
from openbwv.server.store import numbered_placeholders
from openbwv.server.store.pg_schema import PG_MIGRATIONS

# SQLite's own bookkeeping and the R*Tree's shadow tables are how SQLite stores things, not the schema.
_SQLITE_INTERNAL = ("sqlite_", "track_span_rtree_")


def tables_and_columns(store: MetadataStore) -> dict[str, list[str]]:
    db = store.reader()
    if store.engine_name == "sqlite":
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
                 if not r[0].startswith(_SQLITE_INTERNAL)]
        return {n: sorted(r[1] for r in db.execute(f'PRAGMA table_info("{n}")').fetchall()) for n in names}
    out: dict[str, list[str]] = {}
    for table, column in db.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'"):
        out.setdefault(table, []).append(column)
    return {t: sorted(c) for t, c in out.items()}


def test_every_migration_has_both_engines_sides_numbered_alike():
    assert [v for v, _ in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))
    assert sorted(PG_MIGRATIONS) == [v for v, _ in MIGRATIONS]


def test_a_new_database_reaches_the_latest_version_and_a_reopen_changes_nothing(db_url: str):
    store = MetadataStore(db_url)
    try:
        assert store.schema_version == SCHEMA_VERSION
        before = tables_and_columns(store)
    finally:
        store.close()
    store = MetadataStore(db_url)
    try:
        assert store.schema_version == SCHEMA_VERSION
        assert tables_and_columns(store) == before
    finally:
        store.close()


def test_both_engines_reach_the_same_tables_and_columns(pg, tmp_path: Path):
    lite = MetadataStore(f"sqlite:///{tmp_path / 'evidence.db'}")
    post = MetadataStore(pg.new_database())
    try:
        assert lite.schema_version == post.schema_version == SCHEMA_VERSION
        lite_tables, pg_tables = tables_and_columns(lite), tables_and_columns(post)
        assert "segments" in lite_tables and "audit_log" in lite_tables and "track_span_rtree" in lite_tables
        assert pg_tables == lite_tables
    finally:
        lite.close()
        post.close()


def test_the_track_index_has_a_gist_index_on_postgresql(pg):
    store = MetadataStore(pg.new_database())
    try:
        methods = store.reader().execute(
            "SELECT a.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_class t ON t.oid = i.indrelid JOIN pg_am a ON a.oid = c.relam "
            "WHERE t.relname = 'track_span_rtree'").fetchall()
        assert ("gist",) in methods
    finally:
        store.close()


def test_nodes_starting_at_once_on_one_postgresql_migrate_it_once(pg):
    url = pg.new_database()
    stores: list[MetadataStore] = []
    errors: list[BaseException] = []

    def start() -> None:
        try:
            stores.append(MetadataStore(url))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert [s.schema_version for s in stores] == [SCHEMA_VERSION] * 4
        assert stores[0].reader().execute("SELECT COUNT(*) FROM schema_version").fetchone() == (1,)
    finally:
        for s in stores:
            s.close()


def test_a_database_from_a_newer_server_is_refused(db_url: str):
    store = MetadataStore(db_url)
    with store.transaction() as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    store.close()
    with pytest.raises(ConfigError, match=f"schema version {SCHEMA_VERSION + 1}"):
        MetadataStore(db_url)


def test_an_unreachable_postgresql_is_a_clear_start_error():
    with pytest.raises(ConfigError, match="cannot open the evidence database postgresql://bwv@127.0.0.1:1/evidence"):
        MetadataStore("postgresql://bwv@127.0.0.1:1/evidence?connect_timeout=2")


@pytest.mark.parametrize("sql, numbered", [
    ("SELECT ? , ?", "SELECT $1 , $2"),
    ("SELECT '?' || ?, \"a?\" FROM t WHERE x LIKE 'clip:%' AND y = ?", "SELECT '?' || $1, \"a?\" FROM t WHERE x LIKE 'clip:%' AND y = $2"),
    ("SELECT 'it''s ?', ? -- why?\n, ?", "SELECT 'it''s ?', $1 -- why?\n, $2"),
])
def test_placeholders_are_numbered_outside_quotes_and_comments(sql: str, numbered: str):
    assert numbered_placeholders(sql) == numbered
