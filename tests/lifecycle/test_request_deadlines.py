"""Subject access deadlines (server/sar.py): one calendar month, extendable by two."""

from datetime import date

import pytest

from openbwv.server.sar import add_months, due_date, is_overdue


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
