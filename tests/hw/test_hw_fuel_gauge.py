"""Fuel gauges: level and minutes left from a MAX17048, an INA219, or an emulated 12-hour battery."""

from __future__ import annotations

import pytest

from openbwv.hw import HardwareConfig, open_hardware
from openbwv.hw.config import BatteryConfig
from openbwv.hw.errors import BackendUnavailable, FuelGaugeError, HardwareConfigError, UnknownBackend
from openbwv.hw.fuel_gauge import EmulatedGauge, Ina219Gauge, Max17048Gauge, lipo_level_from_voltage


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class RegisterBus:
    """Stands in for smbus2.SMBus: a chip's 16-bit registers, sent high byte first (no I2C bus exists here)."""

    def __init__(self, address: int, registers: dict[int, int]):
        self.address, self.registers = address, registers

    def read_i2c_block_data(self, addr: int, register: int, length: int) -> list[int]:
        if addr != self.address:
            raise OSError(121, "Remote I/O error")
        value = self.registers[register]
        return [value >> 8, value & 0xFF][:length]

    def close(self) -> None:
        pass


def test_an_emulated_battery_lasts_twelve_hours_and_says_how_long_is_left():
    clock = FakeClock()
    gauge = EmulatedGauge(clock=clock)
    assert gauge.read().level_pct == 100 and gauge.read().minutes_left == pytest.approx(720)
    clock.t += 6 * 3600
    half = gauge.read()
    assert half.level_pct == pytest.approx(50) and half.minutes_left == pytest.approx(360)
    clock.t += 7 * 3600
    assert gauge.read().level_pct == 0 and gauge.read().minutes_left == 0


def test_the_emulated_battery_can_be_sped_up_for_tests_and_charges_in_the_dock():
    clock = FakeClock()
    gauge = EmulatedGauge(speedup=3600, start_pct=20, clock=clock)  # an hour a second
    clock.t += 1.2  # 1.2 battery hours = 10 % of 12 h
    assert gauge.read().level_pct == pytest.approx(10)
    gauge.set_charging(True)
    clock.t += 1.2
    reading = gauge.read()
    assert reading.charging and reading.minutes_left is None and reading.level_pct == pytest.approx(50)


def test_a_max17048_reports_its_level_voltage_and_the_time_left_at_its_charge_rate():
    rate = (-0x10000 + round(-10 / 0.208)) & 0xFFFF  # -10 %/h
    bus = RegisterBus(0x36, {0x08: 0x0012, 0x02: round(3.7 / 78.125e-6), 0x04: 42 * 256 + 128, 0x16: rate})
    reading = Max17048Gauge(bus).read()
    assert reading.level_pct == pytest.approx(42.5)
    assert reading.voltage_v == pytest.approx(3.7, abs=1e-4)
    assert reading.minutes_left == pytest.approx(42.5 / 10 * 60, rel=0.01) and not reading.charging


def test_a_chip_that_is_not_a_max17048_is_named_for_what_it_is():
    with pytest.raises(FuelGaugeError, match="version 0x1234; expected a MAX17048"):
        Max17048Gauge(RegisterBus(0x36, {0x08: 0x1234}))
    with pytest.raises(FuelGaugeError, match="did not answer.*i2cdetect"):
        Max17048Gauge(RegisterBus(0x37, {0x08: 0x0012}))


def test_an_ina219_gives_the_level_from_the_cell_voltage_and_minutes_from_the_current():
    bus_v, shunt_v = 3.79, 0.05  # 0.5 A through 0.1 ohm
    bus = RegisterBus(0x42, {0x00: 0x399F, 0x02: round(bus_v / 0.004) << 3, 0x01: round(shunt_v / 10e-6)})
    reading = Ina219Gauge(bus, 0x42, shunt_ohms=0.1, capacity_mah=10_000).read()
    assert reading.level_pct == pytest.approx(50, abs=0.5)
    assert reading.current_a == pytest.approx(0.5)
    assert reading.minutes_left == pytest.approx(0.5 * 10 / 0.5 * 60, rel=0.02)  # 5 Ah at 0.5 A: 10 h


def test_the_cell_curve_is_monotonic_and_clamped():
    levels = [lipo_level_from_voltage(v / 100) for v in range(280, 430)]
    assert levels == sorted(levels) and levels[0] == 0 and levels[-1] == 100


def test_a_missing_i2c_bus_is_a_clear_error():
    with pytest.raises(BackendUnavailable, match=r"could not open I2C bus 17 .*raspi-config"):
        Max17048Gauge(17)


def test_the_emulated_camera_has_an_emulated_battery_and_a_pi_none_by_default():
    with open_hardware(HardwareConfig(battery=BatteryConfig(speedup=60))) as hw:
        assert isinstance(hw.battery, EmulatedGauge) and hw.battery.speedup == 60
    assert HardwareConfig(backend="pi").fuel_gauge == "none"
    with pytest.raises(HardwareConfigError, match="invents a battery"):
        HardwareConfig(backend="pi", battery=BatteryConfig(gauge="emulated")).check()
    with pytest.raises(UnknownBackend, match="fuel gauge backend 'bq27441'"):
        HardwareConfig.from_mapping({"battery": {"gauge": "bq27441"}})
    table = HardwareConfig.from_mapping({"battery": {"gauge": "ina219", "address": 0x42, "capacity_mah": 5000}})
    assert (table.battery.address, table.battery.capacity_mah) == (0x42, 5000)
