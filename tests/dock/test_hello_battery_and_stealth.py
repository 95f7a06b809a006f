"""HELLO's battery time left and stealth changes: new optional fields, so old cameras and docks still talk."""

from __future__ import annotations

import pytest

from openbwv.dock.errors import BadMessage
from openbwv.dock.protocol import CameraHello, Message, MessageType, check_message
from openbwv.dock.state import BayStatus, format_status

OLD_HELLO = {"role": "camera", "reply_to": 1, "protocol": 1, "device_id": "cam-1", "firmware": "openbwv-0.1",
             "battery_pct": None, "storage_free_bytes": 0, "storage_used_bytes": 0, "segments": 0,
             "clock_utc_us": 0}


def test_a_hello_from_a_camera_without_the_new_fields_is_still_understood():
    check_message(MessageType.HELLO, OLD_HELLO)
    hello = CameraHello.from_message(Message(MessageType.HELLO, 2, OLD_HELLO))
    assert hello.battery_minutes_left is None and hello.stealth_changes is None
    assert "battery_minutes_left" not in hello.to_fields()  # an unknown value is left out, as before


def test_a_hello_carries_minutes_left_charging_and_the_stealth_log():
    changes = [{"utc_us": 1_800_000_000_000_000, "on": True, "cause": "gesture"}]
    fields = {**OLD_HELLO, "battery_pct": 9, "battery_minutes_left": 64, "battery_charging": False,
              "stealth_changes": changes}
    check_message(MessageType.HELLO, fields)
    hello = CameraHello.from_message(Message(MessageType.HELLO, 2, fields))
    assert (hello.battery_minutes_left, hello.battery_charging, hello.stealth_changes) == (64, False, changes)


def test_bad_battery_and_stealth_fields_are_refused_by_name():
    with pytest.raises(BadMessage, match="battery_minutes_left"):
        check_message(MessageType.HELLO, {**OLD_HELLO, "battery_minutes_left": -5})
    with pytest.raises(BadMessage, match="stealth_changes"):
        check_message(MessageType.HELLO, {**OLD_HELLO, "stealth_changes": [{"on": "yes"}]})


def test_bwv_dock_status_shows_the_time_left():
    table = format_status([BayStatus("bay-1", device_id="cam-1", battery_pct=9, battery_minutes_left=64)])
    assert "9% 1h04" in table
