"""Which database engine holds the metadata, from one URL.

``sqlite:///ABSOLUTE/PATH`` (or ``sqlite:relative/path``) is the embedded
default, one file beside the evidence; ``postgresql://USER@HOST:PORT/DBNAME``
(libpq's own URL form, ``postgres://`` too) is the fleet engine that several
server nodes share.  The setting is checked here without touching the
network, so that a typo stops the server at start with a message naming the
setting, not at the first upload.  A password never belongs in the URL that
sits in config.toml or a process listing: use PGPASSFILE or ~/.pgpass, which
libpq reads itself; a URL carrying one is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from ..errors import ConfigError

SQLITE = "sqlite"
POSTGRESQL = "postgresql"

# The query parameters libpq accepts that make sense for a server's metadata connection.
_PG_PARAMS = {"host", "port", "dbname", "user", "sslmode", "sslrootcert", "sslcert", "sslkey", "sslcrl",
              "connect_timeout", "application_name", "target_session_attrs", "passfile", "options",
              "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"}

_HINT = "give sqlite:///PATH (the embedded default) or postgresql://USER@HOST:PORT/DBNAME"


@dataclass(frozen=True)
class DatabaseUrl:
    """A checked metadata URL: the engine, and for SQLite its file, for PostgreSQL its libpq URL."""

    engine: str
    path: Path | None = None  # SQLite
    conninfo: str = ""        # PostgreSQL, as given (libpq parses it again, the same way)

    def __str__(self) -> str:
        return f"sqlite://{self.path}" if self.engine == SQLITE else self.conninfo

    @property
    def shown(self) -> str:
        """For logs and errors (PostgreSQL: without the query string, which may name key files)."""
        return str(self) if self.engine == SQLITE else self.conninfo.split("?", 1)[0]


def sqlite_url(path: Path) -> DatabaseUrl:
    return DatabaseUrl(SQLITE, path=Path(path))


def parse_database_url(text: str, *, base: Path | None = None) -> DatabaseUrl:
    """`text` as a DatabaseUrl, or ConfigError saying what is wrong with it.

    A relative SQLite path is taken from `base` (BWV_HOME/server) when given."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"database {text!r}: empty; {_HINT}")
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep:
        raise ConfigError(f"database {text!r} is not a URL; {_HINT}")
    scheme = scheme.lower()
    if scheme == SQLITE:
        return _sqlite(text, rest, base)
    if scheme in ("postgresql", "postgres"):
        return _postgresql(text)
    raise ConfigError(f"database {text!r}: engine {scheme!r} is not supported; {_HINT}")


def _sqlite(text: str, rest: str, base: Path | None) -> DatabaseUrl:
    if rest.startswith("//"):
        # sqlite:///abs/path (empty authority) or sqlite://relative — the latter is a common slip.
        authority, _, path = rest[2:].partition("/")
        if authority:
            raise ConfigError(f"database {text!r}: a SQLite URL has no host; write sqlite:///ABSOLUTE/PATH "
                              "or sqlite:RELATIVE/PATH")
        path = "/" + path.lstrip("/")  # sqlite:////abs (SQLAlchemy's spelling) is the same file
    else:
        path = rest
    if "?" in path or "#" in path:
        raise ConfigError(f"database {text!r}: SQLite takes no options in the URL (the server sets WAL and "
                          "synchronous=FULL itself)")
    if not path or path.endswith("/"):
        raise ConfigError(f"database {text!r}: name the database file, e.g. sqlite:///var/lib/bwv/evidence.db")
    p = Path(path)
    if not p.is_absolute():
        p = (base or Path.cwd()) / p
    return sqlite_url(p)


def _postgresql(text: str) -> DatabaseUrl:
    try:
        parts = urlsplit(text)
        port = parts.port
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as e:
        raise ConfigError(f"database {_redact(text)!r}: {e}; {_HINT}") from None
    if parts.password is not None:
        raise ConfigError(f"database {_redact(text)!r}: a password does not belong in the URL (it would sit "
                          "in config.toml and the process list); put it in ~/.pgpass or PGPASSFILE")
    if parts.fragment:
        raise ConfigError(f"database {text!r}: a PostgreSQL URL has no #fragment")
    dbname = parts.path.lstrip("/")
    given = dict(query)
    if not dbname and "dbname" not in given:
        raise ConfigError(f"database {text!r}: name the database, e.g. postgresql://bwv@db.force.example/evidence")
    if "/" in dbname:
        raise ConfigError(f"database {text!r}: {dbname!r} is not a database name")
    if not parts.hostname and "host" not in given:
        raise ConfigError(f"database {text!r}: name the host (or ?host=/socket/dir), e.g. "
                          "postgresql://bwv@127.0.0.1:5432/evidence")
    if port is not None and not 1 <= port <= 65535:
        raise ConfigError(f"database {text!r}: port {port} outside 1..65535")
    if "password" in given:
        raise ConfigError("database URL: a password does not belong in the URL; use ~/.pgpass or PGPASSFILE")
    unknown = sorted(k for k in given if k not in _PG_PARAMS)
    if unknown:
        raise ConfigError(f"database {text!r}: unknown option(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(_PG_PARAMS))}")
    return DatabaseUrl(POSTGRESQL, conninfo=text)


def _redact(text: str) -> str:
    """The URL with any user:password@ reduced to user:***@ (for error messages)."""
    scheme, sep, rest = text.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return text
    return f"{scheme}{sep}{creds.split(':', 1)[0]}:***@{host}"


__all__ = ["DatabaseUrl", "POSTGRESQL", "SQLITE", "parse_database_url", "sqlite_url"]
