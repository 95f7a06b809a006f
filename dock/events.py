"""Structured log lines: `event=NAME key=value ...`, one line per thing that happened at a bay.

Whoever runs a dock wants to grep, alert on and chart what it did (which
camera, which segment, how fast, which retries) without parsing prose; the
logfmt shape is what journald, Loki and `grep event=upload_retry` all read.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("bwv.dock.events")


def _value(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        text = f"{v:.3f}".rstrip("0").rstrip(".")
        return text or "0"
    text = str(v)
    if not text or any(c in text for c in ' "=\\\n\t'):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    return text


def kv(**fields: Any) -> str:
    """`key=value` pairs in the order given; values with spaces, quotes or `=` are quoted."""
    return " ".join(f"{k}={_value(v)}" for k, v in fields.items())


def log_event(event: str, *, level: int = logging.INFO, logger: logging.Logger | None = None, **fields: Any) -> str:
    """Log one structured line and return it (tests read it back)."""
    line = kv(event=event, **fields)
    (logger or log).log(level, "%s", line)
    return line


def parse_kv(line: str) -> dict[str, str]:
    """The inverse of `kv`, for tests and for tools that read the log."""
    out: dict[str, str] = {}
    i, n = 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        eq = line.find("=", i)
        if eq < 0:
            break
        key = line[i:eq]
        i = eq + 1
        if i < n and line[i] == '"':
            i += 1
            buf = []
            while i < n and line[i] != '"':
                if line[i] == "\\" and i + 1 < n:
                    i += 1
                    buf.append("\n" if line[i] == "n" else line[i])
                else:
                    buf.append(line[i])
                i += 1
            i += 1
            out[key] = "".join(buf)
        else:
            end = line.find(" ", i)
            end = n if end < 0 else end
            out[key] = line[i:end]
            i = end
    return out


__all__ = ["kv", "log_event", "parse_kv"]
