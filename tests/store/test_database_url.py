"""One setting chooses the metadata engine; a malformed or unsupported one stops the server with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from openbwv.server.config import load_config, settings
from openbwv.server.errors import ConfigError
from openbwv.server.store import POSTGRESQL, SQLITE, parse_database_url


def test_an_absolute_sqlite_url_names_its_file():
    url = parse_database_url("sqlite:///var/lib/bwv/evidence.db")
    assert (url.engine, url.path) == (SQLITE, Path("/var/lib/bwv/evidence.db"))
    assert str(url) == "sqlite:///var/lib/bwv/evidence.db"


def test_a_relative_sqlite_url_is_taken_from_the_base_folder(tmp_path: Path):
    assert parse_database_url("sqlite:meta/evidence.db", base=tmp_path).path == tmp_path / "meta" / "evidence.db"


@pytest.mark.parametrize("text", [
    "postgresql://bwv@db.force.example:5432/evidence",
    "postgres://bwv@127.0.0.1/evidence?sslmode=verify-full&application_name=node-2",
    "postgresql:///evidence?host=/run/postgresql",
])
def test_postgresql_urls_are_passed_to_libpq_as_given(text: str):
    url = parse_database_url(text)
    assert (url.engine, url.conninfo, url.path) == (POSTGRESQL, text, None)


@pytest.mark.parametrize("text, says", [
    ("", "empty"),
    ("evidence.db", "not a URL"),
    ("mysql://bwv@db/evidence", "engine 'mysql' is not supported"),
    ("sqlite://host/evidence.db", "has no host"),
    ("sqlite:///var/lib/bwv/", "name the database file"),
    ("sqlite:///evidence.db?mode=ro", "takes no options"),
    ("postgresql://bwv@db.force.example:5432/", "name the database"),
    ("postgresql://bwv@db.force.example:99999/evidence", "99999"),
    ("postgresql://bwv@db.force.example:port/evidence", "port"),
    ("postgresql:///evidence", "name the host"),
    ("postgresql://bwv@db/evidence?sslmod=require", "unknown option(s) sslmod"),
    ("postgresql://bwv@db/a/b", "not a database name"),
])
def test_a_malformed_or_unsupported_url_is_refused_with_the_reason(text: str, says: str):
    with pytest.raises(ConfigError) as e:
        parse_database_url(text)
    assert says in str(e.value)


def test_a_password_in_the_url_is_refused_and_never_repeated():
    for text in ("postgresql://bwv:hunter2@db/evidence", "postgresql://bwv@db/evidence?password=hunter2"):
        with pytest.raises(ConfigError) as e:
            parse_database_url(text)
        assert "pgpass" in str(e.value) and "hunter2" not in str(e.value)


def test_config_toml_and_the_command_line_set_the_engine_and_the_option_wins(tmp_path: Path):
    config = tmp_path / "config.toml"
    assert load_config(config, {}).db is None  # no file: the embedded default
    config.write_text('[server]\ndb = "postgresql://bwv@db.force.example/evidence"\n')
    assert load_config(config, {}).db == "postgresql://bwv@db.force.example/evidence"
    assert load_config(config, settings(db="sqlite:///srv/evidence.db")).db == "sqlite:///srv/evidence.db"


def test_a_bad_engine_in_config_toml_names_the_setting(tmp_path: Path):
    config = tmp_path / "config.toml"
    config.write_text('[server]\ndb = "oracle://db/evidence"\n')
    with pytest.raises(ConfigError, match="oracle"):
        load_config(config, {})
    config.write_text("[server]\ndb = 5\n")
    with pytest.raises(ConfigError, match="db = 5 has the wrong type"):
        load_config(config, {})
