"""The dock measures the camera's clock against its own and sets it; the offset is recorded on both sides."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openbwv.dock.bay import Bay
from openbwv.dock.clocksync import ClockSample, best_sample
from openbwv.dock.config import BayConfig
from openbwv.dock.protocol import MessageType
from openbwv.dock.state import StateStore
from openbwv.dock.upload import DirectoryUploader
from openbwv.firmware.camera import load_clock_state
from openbwv.firmware.clipwriter import ClockState

from .dock_kit import utc_us


# --------------------------------------------------------------------------- the arithmetic
@given(st.integers(-10**12, 10**12), st.integers(0, 10**6), st.integers(1_600_000_000_000_000, 2_000_000_000_000_000))
def test_with_a_symmetric_link_the_offset_is_exact(skew_us, one_way_us, t0):
    # The camera's clock reads `skew_us` behind the dock's; the reply takes as long as the probe.
    sample = ClockSample(dock_sent_us=t0, camera_us=t0 + one_way_us - skew_us, dock_received_us=t0 + 2 * one_way_us)
    assert sample.offset_us == skew_us
    assert sample.rtt_us == 2 * one_way_us


@given(st.integers(-10**9, 10**9), st.integers(0, 10**6), st.integers(0, 10**6))
def test_with_an_asymmetric_link_the_error_is_within_half_the_round_trip(skew_us, out_us, back_us):
    t0 = 1_800_000_000_000_000
    sample = ClockSample(t0, t0 + out_us - skew_us, t0 + out_us + back_us)
    assert abs(sample.offset_us - skew_us) <= sample.error_bound_us


def test_the_probe_with_the_shortest_round_trip_is_trusted():
    slow = ClockSample(0, 1_000, 50_000)
    fast = ClockSample(100_000, 100_900, 101_000)
    assert best_sample([slow, fast, ClockSample(200_000, 0, 260_000)]) is fast
    with pytest.raises(ValueError, match="clock jumped"):
        best_sample([ClockSample(10, 0, 5)])


# --------------------------------------------------------------------------- over the link
def test_the_dock_sets_a_wrong_camera_clock_and_the_offset_lands_in_clock_json(camera, cradle_factory, tmp_path,
                                                                              server_keys):
    skew_us = -7_500_000  # the camera's clock is 7.5 s slow
    told: list[ClockState] = []
    cradle = cradle_factory(camera, clock=lambda: utc_us() + skew_us, on_clock_set=told.append)
    store = StateStore(tmp_path / "state")
    bay = Bay(BayConfig("bay-1", "unused", camera.storage.directory), DirectoryUploader(tmp_path / "up", server_keys),
              store=store, probes=5)

    report = bay.run_session(cradle.dock_port)

    measured = report.clock.offset_us
    assert abs(measured - 7_500_000) <= report.clock.error_bound_us + 2_000  # +2 ms for the pty's scheduling
    on_disk = json.loads(camera.clock_path.read_text())
    assert on_disk["offset_us"] == measured and on_disk["rtt_us"] == report.clock.rtt_us
    assert abs(on_disk["sync_utc_us"] - utc_us()) < 5_000_000  # set in dock (true) time
    state = load_clock_state(camera.clock_path)  # what the firmware reads at its next start
    assert state == ClockState(on_disk["sync_utc_us"], measured)
    assert told == [state]  # and the running firmware was told at once
    record = store.device(camera.device_id)  # the dock's record of the camera
    assert record["clock_offset_us"] == measured and record["last_bay"] == "bay-1"
    assert store.read_bays()[0].clock_offset_us == measured


def test_a_camera_reports_its_last_clock_setting_when_greeted_again(camera, cradle_factory, tmp_path, server_keys):
    cradle = cradle_factory(camera, clock=lambda: utc_us() + 3_000_000)
    bay = Bay(BayConfig("bay-1", "unused", camera.storage.directory), DirectoryUploader(tmp_path / "up", server_keys))
    first = bay.run_session(cradle.dock_port)
    assert cradle.link.join(3)
    again = cradle_factory(camera)
    ch = again.channel()
    hello = ch.request(MessageType.HELLO, {"role": "dock", "protocol": 1, "dock_id": "d"}, MessageType.HELLO,
                       timeout=3)
    assert hello["clock_offset_us"] == first.clock.offset_us
    assert hello["clock_sync_utc_us"] > 0
