"""The few pieces of SQL the two engines spell differently, for queries written once.

Most of the server's SQL is common to SQLite and PostgreSQL; where it is not
(two-argument MIN/MAX, reading text as bytes, the R*Tree), the query asks
here for its engine's words, by the connection it runs on.
"""

from __future__ import annotations

from .url import POSTGRESQL, SQLITE


def dialect(db) -> str:
    """"postgresql" for a PgConnection, "sqlite" for an sqlite3 connection."""
    return getattr(db, "engine", SQLITE)


def is_postgresql(db) -> bool:
    return dialect(db) == POSTGRESQL


def larger(a: str, b: str) -> str:
    """SQLite's two-argument MAX(a, b) (NULL if either is NULL), in SQL both engines read."""
    return f"CASE WHEN ({a}) >= ({b}) THEN ({a}) ELSE ({b}) END"


def smaller(a: str, b: str) -> str:
    """SQLite's two-argument MIN(a, b) (NULL if either is NULL), in SQL both engines read."""
    return f"CASE WHEN ({a}) <= ({b}) THEN ({a}) ELSE ({b}) END"


__all__ = ["dialect", "is_postgresql", "larger", "smaller"]
