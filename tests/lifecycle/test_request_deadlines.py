"""Subject access deadlines (server/sar.py): one calendar month, extendable by two."""

from datetime import date

import pytest

from openbwv.server.sar import add_months, due_date, is_overdue

# Each test once per metadata engine: SQLite, then PostgreSQL (conftest.py).
pytestmark = pytest.mark.usefixtures("db_engine")


@pytest.mark.parametrize("received, due", [
    (date(2026, 1, 15), date(2026, 2, 15)),
    (date(2026, 1, 31), date(2026, 2, 28)),  # no 31 February: the last day of the month
    (date(2028, 1, 31), date(2028, 2, 29)),  # a leap year
    (date(2026, 12, 10), date(2027, 1, 10)),
])
def test_a_response_is_due_the_same_day_next_month(received, due):
    assert due_date(received) == due


def test_an_extension_adds_whole_months_from_receipt():
    assert due_date(date(2026, 3, 31), 2) == date(2026, 6, 30)
    assert add_months(date(2026, 11, 30), 3) == date(2027, 2, 28)


def test_an_open_request_is_overdue_the_day_after_it_was_due_and_a_closed_one_never():
    due = date(2026, 2, 15)
    assert not is_overdue("open", due, date(2026, 2, 15))
    assert is_overdue("open", due, date(2026, 2, 16))
    assert is_overdue("extended", due, date(2026, 2, 16))
    assert not is_overdue("closed", due, date(2027, 1, 1))


def _logged(tmp_path):
    from datetime import datetime, timezone

    from lifecycle.lifecycle_kit import Evidence
    from openbwv.server import sar

    ev = Evidence(tmp_path)
    details = sar.RequestDetails("A. Person", "stopped in the street", date(2026, 3, 31),
                                 1_774_000_000_000_000, 1_774_000_600_000_000)
    with ev.db.transaction() as db:
        request_id, _ = sar.log_request(db, details, actor="user:dora", at=datetime.now(timezone.utc).isoformat())
    return ev, request_id


def test_a_second_extension_may_lengthen_but_never_shorten_and_keeps_every_reason(tmp_path):
    from openbwv.server import sar
    from openbwv.server.errors import Conflict

    ev, request_id = _logged(tmp_path)
    try:
        with ev.db.transaction() as db:
            assert sar.extend(db, request_id, 1, reason="footage from three cameras", actor="user:dora",
                              at="2026-04-01T09:00:00Z") == date(2026, 5, 31)
        with ev.db.transaction() as db:
            assert sar.extend(db, request_id, 2, reason="a fourth camera found", actor="user:dora",
                              at="2026-04-20T09:00:00Z") == date(2026, 6, 30)
        with pytest.raises(Conflict, match="already due 2026-06-30"):
            with ev.db.transaction() as db:
                sar.extend(db, request_id, 1, reason="oops", actor="user:dora", at="2026-04-21T09:00:00Z")
        row = ev.db.reader().execute("SELECT due_date, extension_reason FROM subject_requests WHERE id = ?",
                                     (request_id,)).fetchone()
        assert row == ("2026-06-30", "footage from three cameras\na fourth camera found")
    finally:
        ev.close()
