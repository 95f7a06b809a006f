"""Progress arithmetic and display, structured log lines, and the retry schedule."""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbwv.dock.backoff import Backoff
from openbwv.dock.events import kv, parse_kv
from openbwv.dock.progress import ProgressMeter, TerminalDisplay, UploadProgress


def test_rate_and_eta_come_from_the_bytes_moved_recently():
    meter = ProgressMeter(total=100_000_000, start=0.0)
    rate, eta = meter.update(10_000_000, 1.0)
    assert rate == 10_000_000 and eta == pytest.approx(9.0)
    for t in range(2, 10):  # the link slows to 1 MB/s: after the window the rate shows it
        rate, eta = meter.update(10_000_000 + (t - 1) * 1_000_000, float(t))
    assert rate == pytest.approx(1_000_000, rel=0.01)
    assert eta == pytest.approx(82.0, rel=0.02)
    assert meter.update(100_000_000, 20.0)[1] == 0.0


def test_there_is_no_eta_before_anything_has_moved():
    assert ProgressMeter(total=10, start=5.0).update(0, 5.0) == (0.0, None)


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_shows_one_live_line_per_bay_and_keeps_finished_lines():
    screen = FakeTty()
    display = TerminalDisplay(screen)
    display.update("bay-1", "bay-1 10%")
    display.update("bay-2", "bay-2 50%")
    display.update("bay-1", "bay-1 20%")
    display.message("bay-1", "bay-1 done")
    out = screen.getvalue()
    assert out.endswith("bay-1 done\n\x1b[2Kbay-2 50%\n")  # the finished line stays, bay 2 is still live
    assert "\x1b[2F" in out  # two live lines were redrawn in place


def test_output_to_a_file_is_plain_and_throttled_per_bay():
    out = io.StringIO()
    now = [0.0]
    display = TerminalDisplay(out, plain_interval_s=2.0, clock=lambda: now[0])
    for t, bay in [(0.0, "bay-1"), (0.5, "bay-1"), (0.6, "bay-2"), (2.1, "bay-1")]:
        now[0] = t
        display.update(bay, f"{bay} at {t}")
    assert out.getvalue().splitlines() == ["bay-1 at 0.0", "bay-2 at 0.6", "bay-1 at 2.1"]
    assert "\x1b" not in out.getvalue()


def test_an_upload_logs_structured_progress_lines(caplog):
    caplog.set_level("INFO", logger="bwv.dock.events")
    now = [0.0]
    progress = UploadProgress("bay-3", "cam-7", "cam-7-0000000001.bwv", 4_000_000, clock=lambda: now[0],
                              log_interval_s=1.0)
    for t, done in [(0.0, 0), (0.5, 1_000_000), (1.0, 2_000_000), (2.0, 4_000_000)]:
        now[0] = t
        progress(done)
    progress.finish()
    lines = [parse_kv(r.getMessage()) for r in caplog.records]
    assert [ln["event"] for ln in lines] == ["upload_progress"] * 3 + ["upload_done"]
    assert lines[1] == {"event": "upload_progress", "bay": "bay-3", "device": "cam-7",
                        "segment": "cam-7-0000000001.bwv", "bytes": "2000000", "total": "4000000", "pct": "50",
                        "rate_Bps": "2000000", "eta_s": "1"}
    assert lines[-1]["seconds"] == "2" and lines[-1]["rate_Bps"] == "2000000"


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True), st.text(max_size=20), max_size=5))
def test_structured_lines_read_back_as_written(fields):
    fields.pop("event", None)
    assert parse_kv(kv(**fields)) == fields


def test_retries_back_off_exponentially_up_to_a_cap_with_bounded_jitter():
    b = Backoff(initial_s=2.0, factor=2.0, maximum_s=300.0, jitter=0.2)
    assert [b.delay(n, rand=lambda: 0.5) for n in range(10)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert b.delay(3, rand=lambda: 0.0) == pytest.approx(16 * 0.8)
    assert b.delay(3, rand=lambda: 1.0) == pytest.approx(16 * 1.2)
    assert b.delay(10_000) <= 360
    with pytest.raises(ValueError):
        Backoff(initial_s=10, maximum_s=1)
