"""Fixtures for the track index: the server tests' kit (a real server, tus, sealed segments), reused by path."""

from __future__ import annotations

import kit

server_kit = kit.server_kit()
