"""Fixtures for the track index: the server tests' kit (a real server, tus, sealed segments), reused by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def _server_kit():
    """tests/server/server_kit.py: tests/ is no package, so it is imported by path."""
    name = "openbwv_tests_server_kit"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parent.parent / "server" / "server_kit.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


server_kit = _server_kit()
