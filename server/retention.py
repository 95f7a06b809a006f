"""Retention rules: when a clip may be deleted, and what stops it.  Pure logic, no I/O.

Every clip has a retention *category*; each category keeps footage for a
number of days after it was recorded ("unmarked", the default, for 31).
Two things suspend deletion whatever the category says, for as long as they
last: an **evidence mark** (a case reference and a reason; lifted explicitly)
and a **subject access request** that covers the clip and is not closed
(DPA 2018 s.173: erasing footage once a request has arrived is an offence).

Time is counted in microseconds of UTC, and a day is 86,400 seconds: a
retention period does not stretch or shrink with daylight saving or with the
time zone of whoever looks at it.

Two rules protect against a wrong clock and a late dock:

* **A clip cannot have been recorded after it arrived.**  The recording time
  used for retention is the earlier of the camera's own start time and the
  time the server first received the clip; a camera whose clock runs ahead
  cannot postpone deletion beyond the period.
* **Nothing is deleted that has not been on the due list for the notice
  period** (7 days by default): a clip becomes due no earlier than
  `notice_days` after the server first received it, and no earlier than
  `notice_days` after it was last *released*: re-filed into a category that
  keeps footage for less time, an evidence mark lifted, or a subject access
  request that held it closed.  A camera whose clock runs behind, one docked
  weeks late, or a clip whose hold ends after its period is long over, gives
  supervisors a week to catch misfiled evidence (forces have lost trial
  evidence to a wrong default category) rather than having its footage
  deleted at the next sweep.

The sweep (sweep.py) selects due clips in SQL (lifecycle.py); `decide` here
is the same rule in Python, the specification the SQL is tested against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import ConfigError

DAY_US = 86_400 * 1_000_000
DEFAULT_CATEGORY = "unmarked"
DEFAULT_UNMARKED_DAYS = 31
DEFAULT_NOTICE_DAYS = 7
MAX_DAYS = 100 * 366  # a century: anything longer is a typo, not a policy
CATEGORY_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}\Z")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long each category keeps footage, and the notice before anything goes."""

    categories: Mapping[str, int] = field(default_factory=lambda: {DEFAULT_CATEGORY: DEFAULT_UNMARKED_DAYS})
    notice_days: int = DEFAULT_NOTICE_DAYS

    def __post_init__(self) -> None:
        if DEFAULT_CATEGORY not in self.categories:
            raise ConfigError(f"retention: the category {DEFAULT_CATEGORY!r} (every new clip's) must be defined")
        for name, days in self.categories.items():
            if not isinstance(name, str) or not CATEGORY_RE.match(name):
                raise ConfigError(f"retention: category name {name!r} is not 1-32 of a-z, 0-9, '_', '-' "
                                  "starting with a letter")
            if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
                raise ConfigError(f"retention: category {name!r} keeps footage for {days!r} days; "
                                  f"give a whole number from 1 to {MAX_DAYS}")
        if not isinstance(self.notice_days, int) or isinstance(self.notice_days, bool) \
                or not 0 <= self.notice_days <= 90:
            raise ConfigError(f"retention: notice_days {self.notice_days!r} is not a whole number from 0 to 90")

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None, where: str = "[retention]") -> "RetentionPolicy":
        """The ``[retention]`` table of config.toml::

            [retention]
            unmarked_days = 31        # the default category
            notice_days = 7           # least time on the due list before deletion
            [retention.categories]
            training = 365
            complaint = 750
        """
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table")
        known = {"unmarked_days", "notice_days", "categories"}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
        cats: dict[str, int] = {DEFAULT_CATEGORY: DEFAULT_UNMARKED_DAYS}
        extra = table.get("categories", {})
        if not isinstance(extra, Mapping):
            raise ConfigError(f"{where}.categories must be a table of name = days")
        cats.update(extra)
        if "unmarked_days" in table:
            cats[DEFAULT_CATEGORY] = table["unmarked_days"]
        return cls(categories=cats, notice_days=table.get("notice_days", DEFAULT_NOTICE_DAYS))

    def period_us(self, category: str) -> int:
        try:
            return self.categories[category] * DAY_US
        except KeyError:
            raise ConfigError(f"retention category {category!r} is not configured "
                              f"(configured: {', '.join(sorted(self.categories))})") from None

    @property
    def notice_us(self) -> int:
        return self.notice_days * DAY_US

    def check_category(self, category: str) -> str:
        self.period_us(category)
        return category


def retention_start_us(camera_start_utc_us: int, received_utc_us: int) -> int:
    """The recording time retention counts from: a clip cannot have been recorded after it arrived."""
    return min(camera_start_utc_us, received_utc_us)


@dataclass(frozen=True)
class ClipFacts:
    """What the rules need to know about one clip."""

    clip_id: str
    category: str
    recorded_utc_us: int  # retention_start_us of its earliest segment
    received_utc_us: int  # when the server first received any of it
    active_marks: int = 0
    open_requests: int = 0
    released_utc_us: int | None = None  # when a category change, lifted mark or closed request last released it


@dataclass(frozen=True)
class Decision:
    clip_id: str
    due_utc_us: int
    delete: bool
    reason: str


def due_utc_us(policy: RetentionPolicy, clip: ClipFacts) -> int:
    """When the clip's category lets it go, and never before the notice period since it arrived
    or since it was last released."""
    due = max(clip.recorded_utc_us + policy.period_us(clip.category), clip.received_utc_us + policy.notice_us)
    if clip.released_utc_us is not None:
        due = max(due, clip.released_utc_us + policy.notice_us)
    return due


def releases(policy: RetentionPolicy, from_category: str, to_category: str) -> bool:
    """Whether re-filing a clip from one category to another can let it go sooner, so that the
    notice period starts again: the new category keeps footage for less time, or the old one is
    no longer configured (how long it kept footage is unknown, so assume longer)."""
    if from_category not in policy.categories:
        return True
    return policy.period_us(to_category) < policy.period_us(from_category)


def decide(policy: RetentionPolicy, clip: ClipFacts, now_utc_us: int) -> Decision:
    """Whether a sweep at `now_utc_us` deletes the clip, and why (or why not)."""
    due = due_utc_us(policy, clip)
    if clip.active_marks:
        return Decision(clip.clip_id, due, False, f"marked as evidence ({clip.active_marks} mark(s))")
    if clip.open_requests:
        return Decision(clip.clip_id, due, False, f"held for {clip.open_requests} open subject access request(s)")
    if now_utc_us < due:
        return Decision(clip.clip_id, due, False, "not yet due")
    return Decision(clip.clip_id, due, True, f"{clip.category}: retention period over")


__all__ = [
    "CATEGORY_RE", "ClipFacts", "DAY_US", "DEFAULT_CATEGORY", "Decision", "RetentionPolicy", "decide",
    "due_utc_us", "releases", "retention_start_us",
]
