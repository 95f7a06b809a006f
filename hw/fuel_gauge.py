"""Fuel gauges: how much battery is left, and for how long, behind one interface.

Every gauge answers :meth:`FuelGauge.read` with a :class:`BatteryReading`:
the state of charge in percent, the estimated minutes left at the present
drain (None while charging or when the drain is unknown), and whether the
battery is charging.  Backends:

* :class:`Max17048Gauge`: the MAX17048 "ModelGauge" found on most Pi UPS
  boards (PiSugar, Geekworm X120x): it reports the state of charge and the
  charge rate itself, over I2C (address 0x36).
* :class:`Ina219Gauge`: an INA219 current/voltage monitor (Waveshare UPS HAT
  at 0x42, Adafruit breakout at 0x40) across a shunt: the level comes from
  the cell's resting-voltage curve and the time left from the current.
* :class:`EmulatedGauge`: a 12-hour battery discharging on the monotonic
  clock, ``speedup`` times faster for tests (3600: an hour a second).

The I2C gauges read through ``smbus2`` (pure Python, imported only when a
real gauge is opened) on ``/dev/i2c-1``, the header's SDA/SCL (BCM 2/3),
which both board files keep free for this.
"""

from __future__ import annotations

import bisect
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from .errors import BackendUnavailable, FuelGaugeError

FUEL_GAUGES = ("max17048", "ina219", "emulated", "none")
DEFAULT_ADDRESSES = {"max17048": 0x36, "ina219": 0x40}


@dataclass(frozen=True)
class BatteryReading:
    """One look at the battery."""

    level_pct: float  # state of charge, 0-100
    minutes_left: float | None  # at the present drain; None while charging or when unknown
    charging: bool = False
    voltage_v: float | None = None
    current_a: float | None = None  # positive while discharging

    @property
    def level_int(self) -> int:
        """The level as the dock protocol carries it: a whole percent, 0-100."""
        return max(0, min(100, int(round(self.level_pct))))


class I2cBus(Protocol):
    """The part of ``smbus2.SMBus`` the gauges use."""

    def read_i2c_block_data(self, i2c_addr: int, register: int, length: int) -> list[int]: ...

    def close(self) -> None: ...


class FuelGauge(ABC):
    name: str = "gauge"

    @abstractmethod
    def read(self) -> BatteryReading:
        """The battery now; raises :class:`FuelGaugeError` if the gauge does not answer."""

    def close(self) -> None:
        """Release the bus.  Idempotent."""


def open_i2c_bus(bus: int) -> Any:
    """``smbus2.SMBus(bus)``, with errors that say what to enable."""
    try:
        from smbus2 import SMBus
    except ImportError as exc:  # pragma: no cover - smbus2 is a dependency
        raise BackendUnavailable(f"an I2C fuel gauge needs smbus2 ({exc})") from None
    try:
        return SMBus(bus)
    except (OSError, PermissionError) as exc:
        raise BackendUnavailable(
            f"could not open I2C bus {bus} (/dev/i2c-{bus}: {exc}); enable I2C (raspi-config: Interface Options, "
            "I2C) and run as a user in the 'i2c' group, or choose --fuel-gauge emulated/none off a Pi"
        ) from None


class _I2cGauge(FuelGauge):
    def __init__(self, kind: str, bus: int | I2cBus, address: int | None):
        self.address = DEFAULT_ADDRESSES[kind] if address is None else address
        self._owns_bus = isinstance(bus, int)
        self._bus: Any = open_i2c_bus(bus) if isinstance(bus, int) else bus
        self.name = f"{kind}@0x{self.address:02x}"

    def _word(self, register: int) -> int:
        """A big-endian 16-bit register (both chips send the high byte first; SMBus words are little-endian)."""
        try:
            hi, lo = self._bus.read_i2c_block_data(self.address, register, 2)
        except OSError as exc:
            raise FuelGaugeError(f"fuel gauge {self.name} did not answer reading register 0x{register:02x} "
                                 f"({exc}); expected a gauge at that address (check with i2cdetect -y 1)") from None
        return (hi << 8) | lo

    def close(self) -> None:
        if self._bus is not None and self._owns_bus:
            self._bus.close()
        self._bus = None


class Max17048Gauge(_I2cGauge):
    """MAX17048: VCELL (0x02, 78.125 uV/LSB), SOC (0x04, 1/256 %), CRATE (0x16, signed, 0.208 %/h per LSB)."""

    REG_VCELL, REG_SOC, REG_VERSION, REG_CRATE = 0x02, 0x04, 0x08, 0x16

    def __init__(self, bus: int | I2cBus = 1, address: int | None = None):
        super().__init__("max17048", bus, address)
        version = self._word(self.REG_VERSION)
        if version >> 4 != 0x001:  # 0x001_ for the MAX17048/49
            raise FuelGaugeError(f"the chip at 0x{self.address:02x} reports version 0x{version:04x}; "
                                 "expected a MAX17048/49 (0x001x)")

    def read(self) -> BatteryReading:
        voltage = self._word(self.REG_VCELL) * 78.125e-6
        level = min(100.0, self._word(self.REG_SOC) / 256.0)
        raw = self._word(self.REG_CRATE)
        rate_pct_h = (raw - 0x10000 if raw & 0x8000 else raw) * 0.208
        charging = rate_pct_h > 0.5
        minutes = level / -rate_pct_h * 60 if rate_pct_h < -0.05 else None
        return BatteryReading(level, minutes, charging, voltage_v=voltage)


# Resting voltage of a Li-ion/LiPo cell against its state of charge (typical 18650 at 0.2C, 25 C).
LIPO_CURVE: tuple[tuple[float, float], ...] = (
    (3.00, 0), (3.30, 5), (3.45, 10), (3.60, 20), (3.69, 30), (3.75, 40), (3.79, 50),
    (3.84, 60), (3.90, 70), (3.98, 80), (4.07, 90), (4.20, 100),
)


def lipo_level_from_voltage(volts: float) -> float:
    """State of charge (percent) of one Li-ion cell at ``volts``, interpolated on :data:`LIPO_CURVE`."""
    vs = [v for v, _ in LIPO_CURVE]
    if volts <= vs[0]:
        return 0.0
    if volts >= vs[-1]:
        return 100.0
    i = bisect.bisect_right(vs, volts)
    (v0, p0), (v1, p1) = LIPO_CURVE[i - 1], LIPO_CURVE[i]
    return p0 + (p1 - p0) * (volts - v0) / (v1 - v0)


class Ina219Gauge(_I2cGauge):
    """INA219: bus voltage (0x02, bits 15-3, 4 mV/LSB) and shunt voltage (0x01, signed, 10 uV/LSB).

    ``cells`` in series (a 2S pack reads 8.4 V full) and ``capacity_mah``
    turn those into a level and minutes left.  ``discharge_sign`` is +1 when
    a discharging battery makes the shunt voltage positive (the INA219 wired
    with VIN+ on the battery side, as on the Waveshare UPS HAT), else -1.
    """

    REG_SHUNT, REG_BUS, REG_CONFIG = 0x01, 0x02, 0x00

    def __init__(self, bus: int | I2cBus = 1, address: int | None = None, *, shunt_ohms: float = 0.1,
                 capacity_mah: float = 10_000, cells: int = 1, discharge_sign: int = 1):
        if shunt_ohms <= 0 or capacity_mah <= 0 or cells < 1:
            raise FuelGaugeError(f"INA219 shunt {shunt_ohms} ohm, capacity {capacity_mah} mAh, {cells} cell(s): "
                                 "expected a positive shunt and capacity and at least one cell")
        super().__init__("ina219", bus, address)
        self.shunt_ohms, self.capacity_mah, self.cells, self.sign = shunt_ohms, capacity_mah, cells, discharge_sign
        self._word(self.REG_CONFIG)  # an absent chip is an error now, not at the first alarm

    def read(self) -> BatteryReading:
        raw_bus = self._word(self.REG_BUS)
        if raw_bus & 0x1:
            raise FuelGaugeError(f"INA219 {self.name} reports a math overflow (OVF); its calibration does "
                                 "not fit the shunt")
        voltage = (raw_bus >> 3) * 0.004
        raw_shunt = self._word(self.REG_SHUNT)
        shunt_v = (raw_shunt - 0x10000 if raw_shunt & 0x8000 else raw_shunt) * 10e-6
        current = self.sign * shunt_v / self.shunt_ohms
        level = lipo_level_from_voltage(voltage / self.cells)
        charging = current < -0.02
        minutes = (level / 100 * self.capacity_mah / 1000) / current * 60 if current > 0.01 else None
        return BatteryReading(level, minutes, charging, voltage_v=voltage, current_a=current)


class EmulatedGauge(FuelGauge):
    """A battery that lasts ``hours`` from full at a steady drain, ``speedup`` times faster than real time.

    Level falls linearly from ``start_pct``; minutes left are in *battery*
    minutes (what the officer would have at this drain), so the alarms at
    10 % and 10 minutes fire at the same levels whatever the speed-up.
    :meth:`set_charging` stands for the dock's charger.
    """

    name = "emulated"

    def __init__(self, *, hours: float = 12.0, speedup: float = 1.0, start_pct: float = 100.0,
                 clock: Callable[[], float] = time.monotonic):
        if not 0.1 <= hours <= 100 or not 0 < speedup <= 1e6 or not 0 <= start_pct <= 100:
            raise FuelGaugeError(f"emulated battery of {hours} h at x{speedup} from {start_pct} %: expected "
                                 "0.1-100 h, a speed-up above 0 and at most 1e6, and 0-100 %")
        self.hours, self.speedup = hours, speedup
        self._clock = clock
        self._level = float(start_pct)
        self._t = clock()
        self._charging = False

    def _advance(self) -> None:
        now = self._clock()
        elapsed_h = (now - self._t) * self.speedup / 3600
        self._t = now
        step = 100 * elapsed_h / self.hours
        # A charger fills in about a quarter of the time a shift drains.
        self._level = min(100.0, self._level + 4 * step) if self._charging else max(0.0, self._level - step)

    def set_charging(self, charging: bool) -> None:
        self._advance()
        self._charging = charging

    def read(self) -> BatteryReading:
        self._advance()
        level = self._level
        minutes = None if self._charging else level / 100 * self.hours * 60
        return BatteryReading(level, minutes, self._charging, voltage_v=3.0 + 1.2 * level / 100)
