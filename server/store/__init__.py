"""The metadata's storage layer: which engine (one URL), its connections, its schema in each engine.

`parse_database_url` checks the setting (``sqlite:///PATH``, the embedded
default, or ``postgresql://...``), `open_engine` gives the engine that opens
connections for it, and `pg_schema` holds the PostgreSQL side of the numbered
migrations whose SQLite side is in server/db.py.
"""

from .engines import Engine, PgConnection, PostgresEngine, SqliteEngine, numbered_placeholders, open_engine
from .url import POSTGRESQL, SQLITE, DatabaseUrl, parse_database_url, sqlite_url

__all__ = ["DatabaseUrl", "Engine", "POSTGRESQL", "PgConnection", "PostgresEngine", "SQLITE", "SqliteEngine",
           "numbered_placeholders", "open_engine", "parse_database_url", "sqlite_url"]
