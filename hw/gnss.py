"""GNSS sources: where the camera learns where it is, behind one small interface.

The firmware sees a :class:`GnssSource`: ``take_fixes()`` returns the fixes
and fix events (:mod:`openbwv.hw.nmea`) that arrived since the last call,
``no_fix_reason()`` says why there is no fix when there is none, and
``close()`` ends its thread.  Sources:

* :class:`NmeaReceiver`: NMEA 0183 from a serial port read with pyserial in
  a background thread: a GNSS HAT on the Pi's UART (``/dev/serial0``), a USB
  receiver (``/dev/ttyACM0``), or any pyserial URL (``socket://HOST:PORT``
  for a receiver that serves NMEA over TCP).  In emulation the same class
  reads the far end of a pty into which :mod:`openbwv.hw.gnss_emulator`
  writes a recorded log or a synthetic track: only the port differs.
* :class:`GpsdReceiver`: gpsd's JSON stream over its TCP socket, for a
  device where gpsd already owns the receiver.

A receiver never takes the camera down: a port that cannot be opened, that
fails, or that carries noise is counted, logged, reported as a lost fix,
and retried.  A camera without a fix records exactly as well as one with.

:func:`open_gnss` builds the source a :class:`~openbwv.hw.config.HardwareConfig` asks for.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Iterable, Protocol

from .errors import GnssConfigError
from .nmea import (
    SILENCE_S,
    Fix,
    FixTracker,
    GnssItem,
    NmeaCounters,
    NmeaDecoder,
    NoFix,
)

log = logging.getLogger("bwv.hw.gnss")

READ_TIMEOUT_S = 0.1  # a read that waits this long with nothing: the receiver's burst is over
RETRY_S = 1.0  # a port that failed is tried again this often
BACKLOG = 600  # items kept for a consumer that does not take them (10 minutes of 1 Hz fixes)
DEFAULT_BAUD = 9600  # what NMEA receivers ship with (u-blox, MediaTek, Quectel)
GPSD_DEFAULT = "127.0.0.1:2947"


class Port(Protocol):
    """What a receiver needs of a port: pyserial's ``read`` with a timeout, and ``close``."""

    def read(self, size: int = 1) -> bytes: ...

    def close(self) -> None: ...


class GnssSource(ABC):
    """A GNSS receiver seen from the firmware.  Thread-safe: a background thread fills it, the camera takes."""

    name: str  # for people and for the sealed INFO record: "serial /dev/serial0 at 9600 baud"

    @abstractmethod
    def take_fixes(self) -> list[GnssItem]:
        """The fixes and fix events that arrived since the last call, oldest first."""

    @property
    @abstractmethod
    def last_fix(self) -> Fix | None:
        """The newest fix, even if it has since been lost (check :meth:`no_fix_reason`)."""

    @abstractmethod
    def no_fix_reason(self) -> str | None:
        """None while the receiver holds a fix; otherwise why it does not ("no fix yet", "receiver silent...")."""

    @property
    @abstractmethod
    def counters(self) -> NmeaCounters:
        """What came in and what was dropped, since the source was opened."""

    def close(self) -> None:
        """Stop the background thread and release the port.  Idempotent."""

    def __enter__(self) -> "GnssSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ThreadedSource(GnssSource):
    """The thread, the queue and the fix tracker that the NMEA and gpsd receivers share."""

    def __init__(self, name: str, *, tracker: FixTracker, clock_ns: Callable[[], int], backlog: int,
                 retry_s: float, owned: Iterable[object]):
        self.name = name
        self._clock_ns = clock_ns
        self._retry_s = retry_s
        self._owned = list(owned)  # closed after the thread ends (an emulated receiver's pty feeder)
        self._items: deque[GnssItem] = deque(maxlen=backlog)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._tracker = tracker  # guarded by _lock, like everything the thread and the camera share
        self._last_problem: str | None = None
        self.port_failures = 0
        self.dropped = 0  # items pushed out of the backlog unread
        self._thread = threading.Thread(target=self._run, name=f"gnss {name}", daemon=True)
        self._closed = False

    def start(self) -> None:
        self._thread.start()

    def wait_open(self, timeout: float) -> bool:
        """Block until the port has been opened once (tests and emulation: nothing written before is lost)."""
        return self._opened.wait(timeout)

    def take_fixes(self) -> list[GnssItem]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    @property
    def last_fix(self) -> Fix | None:
        with self._lock:
            return self._tracker.last_fix

    def no_fix_reason(self) -> str | None:
        with self._lock:
            tracker = self._tracker
            if tracker.has_fix:
                return None
            if tracker.state == FixTracker.LOST:
                return f"fix lost: {tracker.lost_reason}"
            return f"no fix yet ({tracker.lost_reason})" if tracker.lost_reason else "no fix yet"

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        for thing in self._owned:
            thing.close()  # type: ignore[attr-defined]

    def _now_us(self) -> int:
        return self._clock_ns() // 1000

    def _push(self, items: list[GnssItem]) -> None:
        """Queue items; the caller holds the lock."""
        overflow = len(self._items) + len(items) - (self._items.maxlen or 0)
        if overflow > 0:
            self.dropped += overflow
        self._items.extend(items)

    def _port_failed(self, reason: str) -> None:
        self.port_failures += 1
        if reason != self._last_problem:  # once per distinct problem, not once a second
            log.warning("gnss %s: %s; retrying every %g s", self.name, reason, self._retry_s)
            self._last_problem = reason
        with self._lock:
            self._push(self._tracker.port_failed(self._now_us(), reason))

    @abstractmethod
    def _run(self) -> None: ...


class NmeaReceiver(_ThreadedSource):
    """NMEA 0183 from a port, read in a thread; the port comes from ``open_port`` (pyserial in production)."""

    def __init__(self, open_port: Callable[[], Port], *, name: str, silence_s: float = SILENCE_S,
                 clock_ns: Callable[[], int] = time.time_ns, backlog: int = BACKLOG, retry_s: float = RETRY_S,
                 owned: Iterable[object] = (), start: bool = True):
        self._decoder = NmeaDecoder(silence_s=silence_s)
        super().__init__(name, tracker=self._decoder.tracker, clock_ns=clock_ns, backlog=backlog, retry_s=retry_s,
                         owned=owned)
        self._open_port = open_port
        if start:
            self.start()

    @property
    def counters(self) -> NmeaCounters:
        with self._lock:
            return NmeaCounters(**self._decoder.counters.as_dict())

    def _run(self) -> None:
        port: Port | None = None
        try:
            while not self._stop.is_set():
                if port is None:
                    try:
                        port = self._open_port()
                    except Exception as e:  # noqa: BLE001 - SerialException, OSError, ValueError: all mean "not now"
                        self._port_failed(f"cannot open the port: {e}")
                        self._stop.wait(self._retry_s)
                        continue
                    self._opened.set()
                    if self._last_problem is not None:
                        log.info("gnss %s: port open again", self.name)
                        self._last_problem = None
                try:
                    waiting = getattr(port, "in_waiting", 0) or 0
                    data = port.read(max(1, min(4096, waiting)))
                except Exception as e:  # noqa: BLE001 - an unplugged receiver must not end the thread
                    _close_quietly(port)
                    port = None
                    self._port_failed(f"the port failed: {e}")
                    self._stop.wait(self._retry_s)
                    continue
                now = self._now_us()
                with self._lock:
                    self._push(self._decoder.feed(data, now) if data else self._decoder.idle(now))
        finally:
            if port is not None:
                _close_quietly(port)


class GpsdReceiver(_ThreadedSource):
    """gpsd's JSON stream (``?WATCH={"enable":true,"json":true}``) over TCP: TPV for fixes, SKY for HDOP.

    gpsd has already parsed the receiver's output, so this reads its
    reports, not NMEA: ``TPV`` with ``mode`` 2 or 3 is a fix (``time`` is the
    receiver's UTC, ``eph`` or ``epx``/``epy`` the error estimate in metres),
    mode 0 or 1 is an epoch without one; the newest ``SKY`` gives HDOP and the
    satellites used.  Lines that are not JSON objects are counted as
    ``malformed``.
    """

    def __init__(self, address: str = GPSD_DEFAULT, *, silence_s: float = SILENCE_S,
                 clock_ns: Callable[[], int] = time.time_ns, backlog: int = BACKLOG, retry_s: float = RETRY_S,
                 start: bool = True):
        host, port = _host_port(address)
        super().__init__(f"gpsd {host}:{port}", tracker=FixTracker(silence_s), clock_ns=clock_ns,
                         backlog=backlog, retry_s=retry_s, owned=())
        self._address = (host, port)
        self._counters = NmeaCounters()
        self._sky: dict = {}
        if start:
            self.start()

    @property
    def counters(self) -> NmeaCounters:
        with self._lock:
            return NmeaCounters(**self._counters.as_dict())

    def _run(self) -> None:
        sock: socket.socket | None = None
        buffer = bytearray()
        try:
            while not self._stop.is_set():
                if sock is None:
                    try:
                        sock = socket.create_connection(self._address, timeout=2.0)
                        sock.settimeout(READ_TIMEOUT_S)
                        sock.sendall(b'?WATCH={"enable":true,"json":true};\n')
                    except OSError as e:
                        sock = _close_quietly(sock)
                        self._port_failed(f"cannot reach gpsd: {e}")
                        self._stop.wait(self._retry_s)
                        continue
                    buffer.clear()
                    self._opened.set()
                    self._last_problem = None
                try:
                    data = sock.recv(4096)
                    if not data:
                        raise ConnectionError("gpsd closed the connection")
                except socket.timeout:
                    data = b""
                except OSError as e:
                    sock = _close_quietly(sock)
                    self._port_failed(f"the gpsd connection failed: {e}")
                    self._stop.wait(self._retry_s)
                    continue
                now = self._now_us()
                with self._lock:
                    self._counters.bytes += len(data)
                    buffer += data
                    *lines, rest = bytes(buffer).split(b"\n")
                    buffer[:] = rest[-65536:]
                    for line in lines:
                        self._report(line, now)
                    # Reports that carry no fix (a gpsd whose receiver is gone still sends VERSION,
                    # DEVICES, WATCH...) must not keep a lost fix looking current.
                    self._push(self._tracker.check_silence(now, bytes_arriving=bool(data)))
        finally:
            _close_quietly(sock)

    def _report(self, line: bytes, now: int) -> None:
        """One gpsd report; the caller holds the lock."""
        if not line.strip():
            return
        try:
            report = json.loads(line)
            if not isinstance(report, dict):
                raise ValueError("not an object")
            kind = report.get("class")
            if kind == "SKY":
                self._sky = report
            if kind != "TPV":
                self._counters.unsupported += kind != "SKY"
                self._counters.sentences += 1
                return
            epoch = self._epoch(report, now)
        except (ValueError, TypeError, KeyError, OverflowError):
            self._counters.malformed += 1
            return
        self._counters.sentences += 1
        if isinstance(epoch, Fix):
            self._counters.fixes += 1
        else:
            self._counters.no_fix_epochs += 1
        self._push(self._tracker.observe(epoch))

    def _epoch(self, tpv: dict, now: int) -> Fix | NoFix:
        utc_us = _iso_us(tpv["time"]) if tpv.get("time") else None
        mode = int(tpv.get("mode", 0))
        if mode < 2 or utc_us is None or "lat" not in tpv or "lon" not in tpv:
            return NoFix(now, utc_us)
        lat, lon = _finite(tpv["lat"]), _finite(tpv["lon"])
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError(f"position {lat}, {lon} out of range")
        accuracy = tpv.get("eph")
        if accuracy is None and "epx" in tpv and "epy" in tpv:
            accuracy = math.hypot(_finite(tpv["epx"]), _finite(tpv["epy"]))
        sky = self._sky
        used = sky.get("uSat")
        if used is None and isinstance(sky.get("satellites"), list):
            used = sum(1 for s in sky["satellites"] if isinstance(s, dict) and s.get("used"))
        return Fix(
            utc_us=utc_us, device_utc_us=now, lat=lat, lon=lon,
            quality=2 if tpv.get("status") == 2 else 1,
            satellites=None if used is None else int(used),
            hdop=None if sky.get("hdop") is None else _finite(sky["hdop"]),
            accuracy_m=None if accuracy is None else round(_finite(accuracy), 3),
            altitude_m=_optional_finite(tpv.get("altMSL", tpv.get("alt"))),
            speed_mps=_optional_finite(tpv.get("speed")),
            course_deg=_optional_finite(tpv.get("track")),
        )


def open_gnss(config, board=None) -> GnssSource | None:
    """The GNSS source a :class:`~openbwv.hw.config.HardwareConfig` asks for, started; None for ``"none"``.

    ``board`` (a :class:`~openbwv.hw.board.Board`) supplies the receiver's
    port and speed on a Pi whose board file has a ``[gnss]`` section.
    Raises :class:`~openbwv.hw.errors.GnssConfigError` for a choice that
    cannot be built (a log file that is not there, a serial source without a
    port); a receiver that is simply not answering is not an error.
    """
    gnss = config.gnss
    spec = getattr(board, "gnss", None)
    source = config.gnss_source or ("serial" if spec is not None else "none")
    if source == "none":
        return None
    if source == "serial":
        device = gnss.device or (spec.device if spec is not None else None)
        if not device:
            raise GnssConfigError("GNSS source 'serial' needs a port: set --gnss-device (BWV_GNSS_DEVICE), "
                                  "e.g. /dev/serial0 or /dev/ttyACM0, or a [gnss] device in the board file")
        baud = gnss.baud or (spec.baud if spec is not None else DEFAULT_BAUD)
        return NmeaReceiver(serial_port_opener(device, baud), name=f"serial {device} at {baud} baud")
    if source == "gpsd":
        return GpsdReceiver(gnss.device or GPSD_DEFAULT)
    from .gnss_emulator import PtyNmeaFeeder, SyntheticTrack, nmea_log_bursts

    if source == "replay":
        if not gnss.device:
            raise GnssConfigError("GNSS source 'replay' needs an NMEA log file: --gnss FILE")
        path = Path(gnss.device)
        try:
            bursts = nmea_log_bursts(path.read_bytes())
        except OSError as e:
            raise GnssConfigError(f"cannot read the NMEA log {path}: {e.strerror} (--gnss takes "
                                  "serial, gpsd, synthetic, none, or the path of an NMEA log)") from None
        return emulated_receiver(PtyNmeaFeeder(bursts), name=f"replay of {path.name} (emulated)")
    if source == "synthetic":
        track = SyntheticTrack(gnss.start_lat, gnss.start_lon, gnss.speed_mps, gnss.heading_deg)
        return emulated_receiver(PtyNmeaFeeder(track.bursts()), name="synthetic track (emulated)")
    raise GnssConfigError(f"GNSS source {source!r} has no builder")  # config.check() makes this unreachable


def emulated_receiver(feeder, *, name: str, silence_s: float = SILENCE_S) -> NmeaReceiver:
    """An :class:`NmeaReceiver` on the far end of ``feeder``'s pty: the real reading and parsing path.

    The feeder starts writing only once the receiver has the port open, so
    an emulated receiver loses nothing at start (a real one may: the line
    does not wait for the camera).  The receiver owns the feeder and closes it.
    """
    receiver = NmeaReceiver(serial_port_opener(feeder.port_path, DEFAULT_BAUD), name=name, silence_s=silence_s,
                            owned=[feeder])
    receiver.wait_open(5.0)
    feeder.start()
    return receiver


def serial_port_opener(device: str, baud: int) -> Callable[[], Port]:
    """Opens ``device`` (a path or pyserial URL) with pyserial: the real backend's port, and the emulated one's."""

    def open_port() -> Port:
        import serial  # pyserial

        return serial.serial_for_url(device, baudrate=baud, timeout=READ_TIMEOUT_S)

    return open_port


# -- helpers --------------------------------------------------------------------
def _close_quietly(thing) -> None:
    if thing is not None:
        try:
            thing.close()
        except Exception:  # noqa: BLE001 - closing a port that already failed
            pass
    return None


def _host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise GnssConfigError(f"gpsd address {address!r} is not HOST:PORT (e.g. {GPSD_DEFAULT})")
    return host.strip("[]"), int(port)


def _iso_us(text: object) -> int:
    if not isinstance(text, str):
        raise ValueError(f"time {text!r}")
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"time {text!r} has no zone")
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def _finite(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return float(value)


def _optional_finite(value: object) -> float | None:
    return None if value is None else _finite(value)


__all__ = ["GnssSource", "GpsdReceiver", "NmeaReceiver", "emulated_receiver", "open_gnss", "serial_port_opener"]
