"""NMEA 0183 in, fixes out: a GNSS receiver's byte stream turned into positions, with nothing else inside.

No ports, threads or clocks here: bytes go in together with the device's
UTC at which they arrived, and what comes out is plain values.  That keeps
the part that meets hostile input (a serial line picks up noise, a receiver
resets mid-sentence, a log file is cut short) small enough to test
exhaustively: whatever the bytes, these classes count what they could not
use and go on; they never raise.

Three layers, each usable alone, chained by :class:`NmeaDecoder`:

* :class:`NmeaAssembler`: bytes to checked sentences.  A sentence runs from
  ``$`` to the end of its line and must end in ``*HH``, the XOR of the bytes
  between; everything else is counted (``garbage_bytes``, ``truncated``,
  ``bad_checksum``) and dropped.
* :class:`NmeaParser`: checked sentences to *epochs*, one per receiver time,
  using pynmea2 for the fields of GGA (position, quality, satellites, HDOP),
  RMC (validity, date, speed, course), GSA (HDOP when GGA lacks it) and GST
  (error estimate in metres).  A receiver sends each epoch as a burst of
  sentences in an order of its own; the epoch is complete as soon as every
  type the receiver has lately sent per epoch is in, or else when a
  sentence of a later time arrives or the burst ends
  (:meth:`NmeaParser.end_of_burst`, called by the reader when the line
  falls quiet).  An epoch is a :class:`Fix` or a :class:`NoFix`.
* :class:`FixTracker`: epochs, and the silence between them, to fixes and
  :class:`FixEvent` s: ``fix_acquired`` (the first since start),
  ``fix_lost`` (the receiver says it has none, or fell silent) and
  ``fix_regained`` (with how long the outage lasted).

Each fix carries two times: ``utc_us`` from the receiver (GNSS time, which
no one on the camera can set) and ``device_utc_us``, the camera's own clock
when the fix's first sentence arrived.  Their difference is a second,
independent check of the camera clock beside the dock's clock sync.  Serial
output trails the epoch by a few tens to a few hundred milliseconds, so the
difference is good to a fraction of a second: enough to show a clock that
is seconds or minutes off, which is what it is for.
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Union

import pynmea2

# NMEA 0183 allows 82 characters including "$" and CR LF; receivers' own
# sentences sometimes run longer.  A line longer than this is not a sentence
# that lost its end of line, it is noise, and is dropped before it can grow.
MAX_SENTENCE = 128
KNOTS_TO_MPS = 1852.0 / 3600.0
SILENCE_S = 3.0  # no epoch at all for this long while holding a fix: the fix is lost

_SENTENCE = re.compile(r"\$([^$*]*)\*([0-9A-Fa-f]{2})\Z")
_TIMED_TYPES = ("GGA", "RMC", "GST")
# RMC mode indicator (NMEA 2.3+) to the GGA quality it corresponds to.
_RMC_MODE_QUALITY = {"A": 1, "D": 2, "P": 3, "R": 4, "F": 5, "E": 6, "M": 7, "S": 8}

EVENT_FIX_ACQUIRED = "fix_acquired"
EVENT_FIX_LOST = "fix_lost"
EVENT_FIX_REGAINED = "fix_regained"


def nmea_checksum(body: str) -> str:
    """The two hex digits after ``*``: XOR of the characters between ``$`` and ``*``."""
    value = 0
    for ch in body.encode("ascii"):
        value ^= ch
    return f"{value:02X}"


def nmea_sentence(body: str) -> str:
    """``$body*HH``: a sentence with its checksum (no line end)."""
    return f"${body}*{nmea_checksum(body)}"


@dataclass
class NmeaCounters:
    """What came in, and what was dropped and why.  Kept for the life of a receiver."""

    bytes: int = 0
    sentences: int = 0  # passed the checksum
    bad_checksum: int = 0  # "*HH" present and wrong, or not hex digits
    truncated: int = 0  # cut short: a new "$" before the line ended, no "*HH", or longer than MAX_SENTENCE
    garbage_bytes: int = 0  # outside any sentence, or inside one that holds a byte no sentence may hold
    unsupported: int = 0  # checksum good, a type the fix does not use (GSV, VTG, TXT ...)
    malformed: int = 0  # checksum good, but the fields are not what the type says
    late: int = 0  # a sentence for an epoch already complete (dropped)
    fixes: int = 0
    no_fix_epochs: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Fix:
    """One position from the receiver.  Optional values are None when the receiver did not say."""

    utc_us: int  # the receiver's UTC of the epoch, microseconds since 1970
    device_utc_us: int  # the camera's clock when the epoch's first sentence arrived
    lat: float  # degrees, WGS 84, north positive
    lon: float  # degrees, east positive
    quality: int  # GGA fix quality: 1 GNSS, 2 differential, 4 RTK fixed, 5 RTK float, 6 estimated...
    satellites: int | None = None
    hdop: float | None = None
    accuracy_m: float | None = None  # 1-sigma horizontal error from GST, when the receiver sends it
    altitude_m: float | None = None
    speed_mps: float | None = None
    course_deg: float | None = None

    @property
    def utc(self) -> datetime:
        return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=self.utc_us)

    @property
    def clock_offset_us(self) -> int:
        """Receiver UTC minus the camera's clock, for this fix (positive: the camera is behind)."""
        return self.utc_us - self.device_utc_us

    def to_record(self) -> dict[str, object]:
        """The JSON object sealed as a LOCATION line (docs/sealed-segment-format.md, "Location records")."""
        record: dict[str, object] = {"utc_us": self.utc_us, "device_utc_us": self.device_utc_us,
                                     "lat": self.lat, "lon": self.lon, "quality": self.quality}
        for key, value in (("sats", self.satellites), ("hdop", self.hdop), ("accuracy_m", self.accuracy_m),
                           ("alt_m", self.altitude_m), ("speed_mps", self.speed_mps),
                           ("course_deg", self.course_deg)):
            if value is not None:
                record[key] = value
        return record


@dataclass(frozen=True)
class NoFix:
    """An epoch in which the receiver reported no usable position (GGA quality 0, RMC status V)."""

    device_utc_us: int
    utc_us: int | None = None  # receivers often report the time before they have a position
    reason: str = "receiver reports no fix"


@dataclass(frozen=True)
class FixEvent:
    """A change of fix state: ``fix_acquired``, ``fix_lost`` or ``fix_regained``."""

    kind: str
    device_utc_us: int
    utc_us: int | None = None  # the receiver's time of the epoch that showed the change, if it gave one
    reason: str | None = None  # fix_lost: why
    outage_s: float | None = None  # fix_regained: from the last fix before the loss to this one

    def to_record(self) -> dict[str, object]:
        record: dict[str, object] = {"event": self.kind, "device_utc_us": self.device_utc_us}
        if self.utc_us is not None:
            record["utc_us"] = self.utc_us
        if self.reason is not None:
            record["reason"] = self.reason
        if self.outage_s is not None:
            record["outage_s"] = self.outage_s
        return record


Epoch = Union[Fix, NoFix]
GnssItem = Union[Fix, FixEvent]


class NmeaAssembler:
    """Bytes to checked sentences (``"GNGGA,..."``, without ``$``, checksum and line end)."""

    def __init__(self, counters: NmeaCounters | None = None):
        self.counters = counters if counters is not None else NmeaCounters()
        self._line = bytearray()
        self._inside = False

    def feed(self, data: bytes) -> list[str]:
        c = self.counters
        c.bytes += len(data)
        out: list[str] = []
        for byte in data:
            if byte == 0x24:  # "$": a sentence starts, whatever was going on
                if self._inside:
                    c.truncated += 1
                self._line = bytearray(b"$")
                self._inside = True
            elif byte in (0x0D, 0x0A):
                if self._inside:
                    self._inside = False
                    sentence = self._check(bytes(self._line))
                    if sentence is not None:
                        out.append(sentence)
            elif not self._inside:
                c.garbage_bytes += 1
            elif not 0x20 <= byte <= 0x7E:  # no sentence holds a control or non-ASCII byte
                c.garbage_bytes += len(self._line) + 1
                self._inside = False
            elif len(self._line) >= MAX_SENTENCE:
                c.truncated += 1
                c.garbage_bytes += 1
                self._inside = False
            else:
                self._line.append(byte)
        return out

    def _check(self, line: bytes) -> str | None:
        c = self.counters
        text = line.decode("ascii")  # only printable ASCII gets this far
        star = text.rfind("*")
        if star < 0 or len(text) - star < 3:
            c.truncated += 1  # cut before (or inside) its checksum
            return None
        match = _SENTENCE.match(text)
        if match is None or nmea_checksum(match[1]) != match[2].upper():
            c.bad_checksum += 1
            return None
        c.sentences += 1
        return match[1]


@dataclass
class _Epoch:
    device_utc_us: int
    tod: time | None = None  # time of day; None until a timed sentence gave one
    gga: object | None = None
    rmc: object | None = None
    gsa: object | None = None
    gst: object | None = None

    @property
    def positioned(self) -> bool:
        return self.gga is not None or self.rmc is not None

    @property
    def kinds(self) -> frozenset[str]:
        return frozenset(k for k in ("gga", "rmc", "gsa", "gst") if getattr(self, k) is not None)


class NmeaParser:
    """Checked sentences to epochs (:class:`Fix` or :class:`NoFix`), one per receiver time."""

    def __init__(self, counters: NmeaCounters | None = None):
        self.counters = counters if counters is not None else NmeaCounters()
        self._epoch: _Epoch | None = None
        self._last_tod: time | None = None  # of the last epoch completed
        self._date: date | None = None  # the receiver's date, from its last RMC
        self._date_tod: time | None = None
        # The types of the last few epochs: once all of them are in, an epoch is complete without
        # waiting for the line to fall quiet.  A few, not one: a no-fix epoch lacks GST, and must
        # not teach the parser to stop waiting for it.
        self._recent_kinds: deque[frozenset[str]] = deque(maxlen=8)

    def sentence(self, body: str, device_utc_us: int) -> list[Epoch]:
        """Take one checked sentence (as :class:`NmeaAssembler` gives it); return the epochs it completed."""
        c = self.counters
        try:
            msg = pynmea2.parse("$" + body)
        except pynmea2.SentenceTypeError:
            c.unsupported += 1
            return []
        except Exception:  # noqa: BLE001 - pynmea2 on hostile text: counted, never fatal
            c.malformed += 1
            return []
        kind = getattr(msg, "sentence_type", "")
        if kind not in ("GGA", "RMC", "GSA", "GST"):
            c.unsupported += 1
            return []
        try:
            tod = self._checked(kind, msg)
        except (ValueError, TypeError, AttributeError, IndexError):
            c.malformed += 1
            return []

        done: list[Epoch] = []
        slot = kind.lower()
        epoch = self._epoch
        if kind in _TIMED_TYPES:
            if tod is not None and tod == self._last_tod and (epoch is None or epoch.tod != tod):
                c.late += 1  # its epoch was completed at the end of the burst before
                return []
            if epoch is not None and (getattr(epoch, slot) is not None or epoch.tod != tod):
                if not epoch.positioned and epoch.tod is None and getattr(epoch, slot) is None:
                    epoch.tod = tod  # only untimed sentences (GSA) so far: they belong to this time
                else:
                    done += self._complete()
                    epoch = None
            if epoch is None:
                epoch = self._epoch = _Epoch(device_utc_us, tod)
        elif epoch is None:
            epoch = self._epoch = _Epoch(device_utc_us)
        elif epoch.gsa is not None:
            return done  # one GSA per constellation: their DOPs are the combined solution's, keep the first
        setattr(epoch, slot, msg)
        expected = frozenset().union(*self._recent_kinds)
        if expected and epoch.kinds >= expected:
            done += self._complete()
        return done

    def end_of_burst(self) -> list[Epoch]:
        """The line fell quiet: the epoch being assembled is complete."""
        return self._complete()

    # -- fields ------------------------------------------------------------------
    @staticmethod
    def _checked(kind: str, msg) -> time | None:
        """Validate the fields used later (so that completing an epoch cannot fail); return the time of day."""
        tod = None
        if kind in _TIMED_TYPES:
            raw = msg.data[0] if msg.data else ""
            if raw:
                tod = msg.timestamp
                if not isinstance(tod, time):
                    raise ValueError(f"time {raw!r}")
        if kind == "GGA":
            int(msg.gps_qual or 0)
            if _has_position(msg):
                _lat_lon(msg)
            _optional(msg.num_sats, int)
            _optional(msg.horizontal_dil, float)
            _optional(msg.data[8] if len(msg.data) > 8 else "", float)
        elif kind == "RMC":
            if msg.status not in ("A", "V", ""):
                raise ValueError(f"status {msg.status!r}")
            if _has_position(msg):
                _lat_lon(msg)
            for index in (6, 7):
                _optional(msg.data[index] if len(msg.data) > index else "", float)
            raw_date = msg.data[8] if len(msg.data) > 8 else ""
            if raw_date and not isinstance(msg.datestamp, date):
                raise ValueError(f"date {raw_date!r}")
        elif kind == "GSA":
            _optional(msg.data[15] if len(msg.data) > 15 else "", float)
        elif kind == "GST":
            for index in (5, 6):
                _optional(msg.data[index] if len(msg.data) > index else "", float)
        return tod

    def _complete(self) -> list[Epoch]:
        epoch, self._epoch = self._epoch, None
        if epoch is None or not epoch.positioned:
            return []  # GSA or GST alone say nothing about where or whether
        self._recent_kinds.append(epoch.kinds)
        if epoch.tod is not None:
            self._last_tod = epoch.tod
        gga, rmc, gsa, gst = epoch.gga, epoch.rmc, epoch.gsa, epoch.gst
        if rmc is not None and rmc.data[8:9] and rmc.data[8] and epoch.tod is not None:
            self._date, self._date_tod = rmc.datestamp, epoch.tod
        utc_us = self._utc_us(epoch.tod, epoch.device_utc_us)

        if gga is not None:
            quality = int(gga.gps_qual or 0)
            source = gga if quality > 0 and _has_position(gga) else None
            if source is None and quality > 0:
                quality = 0
        else:
            valid = rmc.status == "A" and (rmc.data[11:12] or [""])[0] != "N"
            quality = _RMC_MODE_QUALITY.get((rmc.data[11:12] or ["A"])[0] or "A", 1) if valid else 0
            source = rmc if valid and _has_position(rmc) else None
        if source is None or utc_us is None:
            self.counters.no_fix_epochs += 1
            return [NoFix(epoch.device_utc_us, utc_us)]

        lat, lon = _lat_lon(source)
        hdop = _optional(gga.horizontal_dil, float) if gga is not None else None
        if hdop is None and gsa is not None:
            hdop = _optional(gsa.data[15] if len(gsa.data) > 15 else "", float)
        accuracy = None
        if gst is not None and gst.timestamp == epoch.tod:
            sd_lat = _optional(gst.data[5] if len(gst.data) > 5 else "", float)
            sd_lon = _optional(gst.data[6] if len(gst.data) > 6 else "", float)
            if sd_lat is not None and sd_lon is not None:
                accuracy = round(math.hypot(sd_lat, sd_lon), 3)
        altitude = None
        if gga is not None and (gga.data[9:10] or [""])[0] in ("M", ""):
            altitude = _optional(gga.data[8] if len(gga.data) > 8 else "", float)
        speed = course = None
        if rmc is not None:
            knots = _optional(rmc.data[6] if len(rmc.data) > 6 else "", float)
            speed = None if knots is None else round(knots * KNOTS_TO_MPS, 3)
            course = _optional(rmc.data[7] if len(rmc.data) > 7 else "", float)
        self.counters.fixes += 1
        return [Fix(
            utc_us=utc_us, device_utc_us=epoch.device_utc_us, lat=lat, lon=lon, quality=quality,
            satellites=_optional(gga.num_sats, int) if gga is not None else None,
            hdop=hdop, accuracy_m=accuracy, altitude_m=altitude, speed_mps=speed, course_deg=course,
        )]

    def _utc_us(self, tod: time | None, device_utc_us: int) -> int | None:
        """The receiver's full UTC: its time of day on its date (from RMC), or on the device's nearest date."""
        if tod is None:
            return None
        if self._date is not None and self._date_tod is not None:
            day = self._date
            if tod < self._date_tod and (_seconds(self._date_tod) - _seconds(tod)) > 12 * 3600:
                day += timedelta(days=1)  # past midnight since the last date was given
            return _to_us(datetime.combine(day, tod.replace(tzinfo=timezone.utc)))
        device = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=device_utc_us)
        candidates = [_to_us(datetime.combine(device.date() + timedelta(days=d), tod.replace(tzinfo=timezone.utc)))
                      for d in (-1, 0, 1)]
        return min(candidates, key=lambda us: abs(us - device_utc_us))


class FixTracker:
    """Epochs to fixes and fix events: the fix state of the receiver over time."""

    SEARCHING, FIX, LOST = "searching", "fix", "lost"

    def __init__(self, silence_s: float = SILENCE_S):
        self.silence_s = silence_s
        self.state = self.SEARCHING
        self.last_fix: Fix | None = None
        self.last_epoch_device_us: int | None = None
        self.lost_reason: str | None = None

    @property
    def has_fix(self) -> bool:
        return self.state == self.FIX

    def observe(self, epoch: Epoch) -> list[GnssItem]:
        self.last_epoch_device_us = epoch.device_utc_us
        if isinstance(epoch, Fix):
            out: list[GnssItem] = []
            if self.state == self.SEARCHING:
                out.append(FixEvent(EVENT_FIX_ACQUIRED, epoch.device_utc_us, epoch.utc_us))
            elif self.state == self.LOST:
                outage = None
                if self.last_fix is not None:
                    outage = round((epoch.device_utc_us - self.last_fix.device_utc_us) / 1e6, 3)
                out.append(FixEvent(EVENT_FIX_REGAINED, epoch.device_utc_us, epoch.utc_us, outage_s=outage))
            self.state, self.last_fix, self.lost_reason = self.FIX, epoch, None
            out.append(epoch)
            return out
        if self.state == self.FIX:
            return self._lose(epoch.device_utc_us, epoch.utc_us, epoch.reason)
        return []

    def check_silence(self, device_utc_us: int, *, bytes_arriving: bool = False) -> list[GnssItem]:
        """A fix with no epoch for ``silence_s`` is lost.  Called while nothing arrives, and also while
        bytes do arrive but make no epoch: a receiver that reset to another baud rate, or switched to a
        binary protocol, keeps the line busy with bytes that are no position at all."""
        if self.state != self.FIX or self.last_epoch_device_us is None:
            return []
        quiet_s = (device_utc_us - self.last_epoch_device_us) / 1e6
        if quiet_s < self.silence_s:
            return []
        if bytes_arriving:
            return self._lose(device_utc_us, None, f"no usable epoch for {quiet_s:.1f} s (bytes arrive, none "
                                                   "make a fix: wrong baud rate or protocol?)")
        return self._lose(device_utc_us, None, f"receiver silent for {quiet_s:.1f} s")

    def port_failed(self, device_utc_us: int, reason: str) -> list[GnssItem]:
        """The port itself failed (receiver unplugged, device gone)."""
        if self.state == self.FIX:
            return self._lose(device_utc_us, None, reason)
        self.lost_reason = reason
        return []

    def _lose(self, device_utc_us: int, utc_us: int | None, reason: str) -> list[GnssItem]:
        self.state, self.lost_reason = self.LOST, reason
        return [FixEvent(EVENT_FIX_LOST, device_utc_us, utc_us, reason=reason)]


class NmeaDecoder:
    """Assembler, parser and tracker in one: bytes (and quiet moments) in, fixes and events out."""

    def __init__(self, *, silence_s: float = SILENCE_S):
        self.counters = NmeaCounters()
        self.assembler = NmeaAssembler(self.counters)
        self.parser = NmeaParser(self.counters)
        self.tracker = FixTracker(silence_s)

    def feed(self, data: bytes, device_utc_us: int) -> list[GnssItem]:
        out: list[GnssItem] = []
        for body in self.assembler.feed(data):
            for epoch in self.parser.sentence(body, device_utc_us):
                out += self.tracker.observe(epoch)
        return out + self.tracker.check_silence(device_utc_us, bytes_arriving=True)

    def idle(self, device_utc_us: int) -> list[GnssItem]:
        """The line is quiet now: complete the epoch in hand, and notice a receiver gone silent."""
        out: list[GnssItem] = []
        for epoch in self.parser.end_of_burst():
            out += self.tracker.observe(epoch)
        return out + self.tracker.check_silence(device_utc_us)


# -- helpers --------------------------------------------------------------------
def _has_position(msg) -> bool:
    return bool(msg.lat) and bool(msg.lon) and msg.lat_dir in ("N", "S") and msg.lon_dir in ("E", "W")


def _lat_lon(msg) -> tuple[float, float]:
    for raw, width in ((msg.lat, 2), (msg.lon, 3)):
        whole, _, _ = raw.partition(".")
        if not whole.isdigit() or len(whole) != width + 2 or float(raw[width:]) >= 60.0:
            raise ValueError(f"coordinate {raw!r} is not {'d' * width}mm.mmmm")
    lat, lon = float(msg.latitude), float(msg.longitude)
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"position {lat}, {lon} out of range")
    return round(lat, 8), round(lon, 8)


def _optional(raw: object, kind: type) -> float | int | None:
    """A numeric field: None when empty, ValueError when not a finite number of that kind."""
    if raw is None or raw == "":
        return None
    value = kind(raw)  # type: ignore[call-arg]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{raw!r} is not finite")
    return value


def _seconds(t: time) -> float:
    return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _to_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


__all__ = [
    "EVENT_FIX_ACQUIRED", "EVENT_FIX_LOST", "EVENT_FIX_REGAINED", "Epoch", "Fix", "FixEvent", "FixTracker",
    "GnssItem", "MAX_SENTENCE", "NmeaAssembler", "NmeaCounters", "NmeaDecoder", "NmeaParser", "NoFix",
    "nmea_checksum", "nmea_sentence",
]
