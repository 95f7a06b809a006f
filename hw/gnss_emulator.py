"""The emulated GNSS receiver: NMEA written into a pty, at a receiver's pace, for the real reader to parse.

Emulation changes only the port.  :class:`PtyNmeaFeeder` plays the
receiver's part: it writes bursts of NMEA into one end of a pty pair, and
:class:`~openbwv.hw.gnss.NmeaReceiver` opens the other end with pyserial, as
it opens ``/dev/serial0`` on a Pi, and parses what arrives with the same
code.  What it writes comes from:

* :func:`nmea_log_bursts`: a log recorded from a receiver (``bwv camera
  --emulate --gnss FILE``), byte for byte, noise included, paced by the
  times in its sentences (1 Hz where they give none);
* :class:`SyntheticTrack`: a walk or drive from a start point at a speed and
  heading, with correct checksums, optionally with outages during which the
  receiver reports no fix (a tunnel, a basement).  The default in emulation.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import re
import termios
import threading
import time
import tty
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator, Sequence

from .nmea import KNOTS_TO_MPS, nmea_sentence

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
LATENCY_S = 0.05  # a receiver's sentences leave it a little after the epoch they describe
MAX_GAP_S = 300.0  # a longer pause in a log is replayed as this long
DEFAULT_START = (51.5007, -0.1246)  # Westminster Bridge, London

_LOG_TIME = re.compile(rb"\$[A-Z]{2}(?:GGA|RMC|GST|GLL|GNS|ZDA),(\d{2})(\d{2})(\d{2}(?:\.\d+)?)")
_LOG_EPOCH_TYPE = re.compile(rb"\$[A-Z]{2}(GGA|RMC)")


@dataclass(frozen=True)
class TrackPoint:
    """Where the synthetic receiver is at one epoch, and what it will report."""

    index: int
    utc_us: int
    lat: float  # the true position, degrees
    lon: float
    speed_mps: float
    course_deg: float
    has_fix: bool

    @property
    def reported(self) -> tuple[float, float]:
        """The position as the sentences carry it (to 0.00001 minutes, about 2 cm), as a parser reads it back."""
        return _quantised(self.lat), _quantised(self.lon)


class SyntheticTrack:
    """A walk or a drive along a great circle from a start point, reported as a receiver reports it.

    Epoch ``i`` is at ``start_utc_us + i / rate_hz``; by default the start is
    the device clock's next whole second, as a receiver's epochs fall on
    whole seconds of GNSS time.  During an outage (``outages``: pairs of
    start and duration in seconds from the start) the receiver goes on
    talking but reports no fix, while the wearer goes on moving.
    """

    def __init__(
        self,
        start_lat: float = DEFAULT_START[0],
        start_lon: float = DEFAULT_START[1],
        speed_mps: float = 1.4,
        heading_deg: float = 90.0,
        *,
        start_utc_us: int | None = None,
        rate_hz: float = 1.0,
        outages: Sequence[tuple[float, float]] = (),
        satellites: int = 9,
        hdop: float = 0.9,
        accuracy_m: float = 2.5,
        altitude_m: float = 12.0,
        talker: str = "GN",
    ):
        if not (-90 < start_lat < 90 and -180 <= start_lon <= 180):
            raise ValueError(f"start point {start_lat}, {start_lon} is not a latitude and longitude")
        if not 0 < rate_hz <= 20:
            raise ValueError(f"rate {rate_hz} Hz out of range; receivers report 1 to 20 times a second")
        self.start_lat, self.start_lon = start_lat, start_lon
        self.speed_mps, self.heading_deg = speed_mps, heading_deg % 360.0
        self.aligned = start_utc_us is None
        self.start_utc_us = (time.time_ns() // 1_000_000_000 + 1) * 1_000_000 if start_utc_us is None else start_utc_us
        self.rate_hz = rate_hz
        self.outages = tuple(outages)
        self.satellites, self.hdop, self.accuracy_m, self.altitude_m = satellites, hdop, accuracy_m, altitude_m
        self.talker = talker

    def point(self, index: int) -> TrackPoint:
        t = index / self.rate_hz
        lat, lon = destination(self.start_lat, self.start_lon, self.heading_deg, self.speed_mps * t)
        has_fix = not any(start <= t < start + length for start, length in self.outages)
        return TrackPoint(index, self.start_utc_us + round(t * 1_000_000), lat, lon, self.speed_mps,
                          self.heading_deg, has_fix)

    def sentences(self, index: int) -> list[str]:
        """The sentences of epoch ``index``, in a u-blox receiver's order: RMC, VTG, GGA, GSA, GST."""
        p = self.point(index)
        utc = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=p.utc_us)
        hms = utc.strftime("%H%M%S") + f".{utc.microsecond // 10_000:02d}"
        dmy = utc.strftime("%d%m%y")
        g = self.talker
        if not p.has_fix:
            return [nmea_sentence(body) for body in (
                f"{g}RMC,{hms},V,,,,,,,{dmy},,,N",
                f"{g}VTG,,T,,M,,N,,K,N",
                f"{g}GGA,{hms},,,,,0,00,99.99,,,,,,",
                f"{g}GSA,A,1,,,,,,,,,,,,,99.99,99.99,99.99",
            )]
        lat, ns = _ddmm(p.lat, 2), "N" if p.lat >= 0 else "S"
        lon, ew = _ddmm(p.lon, 3), "E" if p.lon >= 0 else "W"
        knots = p.speed_mps / KNOTS_TO_MPS
        sd = self.accuracy_m / math.sqrt(2)  # per axis, so that hypot(sd, sd) is the accuracy
        return [nmea_sentence(body) for body in (
            f"{g}RMC,{hms},A,{lat},{ns},{lon},{ew},{knots:.3f},{p.course_deg:.2f},{dmy},,,A",
            f"{g}VTG,{p.course_deg:.2f},T,,M,{knots:.3f},N,{p.speed_mps * 3.6:.3f},K,A",
            f"{g}GGA,{hms},{lat},{ns},{lon},{ew},1,{self.satellites:02d},{self.hdop:.2f},{self.altitude_m:.1f},M,45.0,M,,",
            f"{g}GSA,A,3,02,05,07,09,13,16,20,29,30,,,,{self.hdop * 1.6:.2f},{self.hdop:.2f},{self.hdop * 1.3:.2f}",
            f"{g}GST,{hms},{self.accuracy_m:.2f},{sd * 1.1:.2f},{sd * 0.9:.2f},0.0,{sd:.3f},{sd:.3f},{sd * 2:.3f}",
        )]

    def burst(self, index: int) -> bytes:
        return "".join(s + "\r\n" for s in self.sentences(index)).encode("ascii")

    def bursts(self, count: int | None = None) -> Iterator[tuple[float, bytes]]:
        """``(seconds after the feeder starts, bytes)`` for epochs 0, 1, ... (for ever when ``count`` is None)."""
        first = LATENCY_S
        if self.aligned:  # epoch 0 is at a whole second of the device clock: wait for it
            first += max(0.0, (self.start_utc_us - time.time_ns() // 1000) / 1e6)
        index = 0
        while count is None or index < count:
            yield first + index / self.rate_hz, self.burst(index)
            index += 1


def nmea_log_bursts(data: bytes) -> list[tuple[float, bytes]]:
    """A recorded NMEA log cut into the receiver's bursts, each with when to send it (seconds from the start).

    A burst ends where a sentence carries a time other than the burst's, or
    where a GGA or RMC comes round again; the pause before the next is the
    difference of their times (across midnight too, at most ``MAX_GAP_S``;
    none for a repeat of the same time), or one second where the log gives
    no times.  Lines are kept byte for byte,
    noise and all: the reader must meet what the receiver sent.
    """
    bursts: list[tuple[float, bytes]] = []
    current = bytearray()
    current_time: float | None = None
    kinds: set[bytes] = set()
    offset = 0.0
    for line in data.splitlines(keepends=True):
        stamp = _LOG_TIME.search(line)
        line_time = None
        if stamp:
            line_time = int(stamp[1]) * 3600 + int(stamp[2]) * 60 + float(stamp[3])
        kind = _LOG_EPOCH_TYPE.search(line)
        new_time = line_time is not None and current_time is not None and line_time != current_time
        repeated = kind is not None and kind[1] in kinds
        if current and (new_time or repeated):
            bursts.append((offset, bytes(current)))
            if line_time is not None and current_time is not None:
                offset += min((line_time - current_time) % 86400, MAX_GAP_S)
            else:
                offset += 1.0
            current.clear()
            kinds.clear()
        if line_time is not None:
            current_time = line_time
        if kind is not None:
            kinds.add(kind[1])
        current += line
    if current:
        bursts.append((offset, bytes(current)))
    return bursts


class PtyNmeaFeeder:
    """The receiver's end of an emulated receiver: writes timed bursts into a pty; the reader opens ``port_path``.

    Like a UART, the line does not wait for its reader: bytes the pty cannot
    take are dropped and counted (``dropped_bytes``).  The feeder keeps the
    reader's end open itself, so that end stays in raw mode and a reader may
    close and reopen it.
    """

    def __init__(self, bursts: Iterable[tuple[float, bytes]]):
        self._bursts = bursts
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        fcntl.fcntl(master, fcntl.F_SETFL, fcntl.fcntl(master, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._master, self._slave = master, slave
        self.port_path = os.ttyname(slave)
        self.written_bytes = 0
        self.dropped_bytes = 0
        self.bursts_sent = 0
        self.finished = threading.Event()  # every burst written (a log at its end)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gnss feeder", daemon=True)
        self._closed = False

    def start(self) -> "PtyNmeaFeeder":
        self._thread.start()
        return self

    def _run(self) -> None:
        start = time.monotonic()
        for offset, data in self._bursts:
            if self._stop.wait(max(0.0, start + offset - time.monotonic())):
                return
            self._write(data)
            self.bursts_sent += 1
        self.finished.set()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EIO):
                    raise
                self.dropped_bytes += len(view)
                return
            self.written_bytes += n
            view = view[n:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> "PtyNmeaFeeder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def destination(lat: float, lon: float, bearing_deg: float, distance_m: float) -> tuple[float, float]:
    """The point ``distance_m`` from ``(lat, lon)`` along the great circle leaving at ``bearing_deg``."""
    phi1, lam1, theta = math.radians(lat), math.radians(lon), math.radians(bearing_deg)
    delta = distance_m / EARTH_RADIUS_M
    phi2 = math.asin(math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta))
    lam2 = lam1 + math.atan2(math.sin(theta) * math.sin(delta) * math.cos(phi1),
                             math.cos(delta) - math.sin(phi1) * math.sin(phi2))
    return math.degrees(phi2), (math.degrees(lam2) + 540.0) % 360.0 - 180.0


def _units(value: float) -> int:
    """|value| in units of 0.00001 minute of arc: what an NMEA position with 5 decimals can say."""
    return round(abs(value) * 60 * 100_000)


def _ddmm(value: float, degree_digits: int) -> str:
    degrees, rest = divmod(_units(value), 60 * 100_000)
    minutes, fraction = divmod(rest, 100_000)
    return f"{degrees:0{degree_digits}d}{minutes:02d}.{fraction:05d}"


def _quantised(value: float) -> float:
    return math.copysign(_units(value) / (60 * 100_000), value)


__all__ = ["DEFAULT_START", "PtyNmeaFeeder", "SyntheticTrack", "TrackPoint", "destination", "nmea_log_bursts"]
