"""Fixtures every test folder may take: `pg`, one real PostgreSQL 15 for the whole session (tests/pg_kit.py),
started only when a test first asks for it and shared by every folder, each test in its own database."""

from __future__ import annotations

import pg_kit

pg = pg_kit.session_fixture()
