"""The body camera at run time: hardware, state machine, encoder, pre-event buffer, clip writer.

Two kinds of thread meet here:

* gpiozero's callback threads deliver button, dock and trigger edges; each
  goes through `post()`, which runs the (pure) state machine under a lock and
  carries out its actions at once, so the red circle lights within
  milliseconds of the press, whatever the encoder is doing.
* the capture loop (`run()`) reads frames, encodes them, and hands packets to
  the pre-event buffer or, while a clip is open, to the clip writer; it also
  opens and closes clips when the state machine asked for it, and every
  `TICK_S` feeds the machine a tick and the storage level, and hands the
  GNSS fixes that arrived since the last tick to the open clip (or, while
  not recording, keeps them as long as the pre-event buffer keeps video, so
  that the pre-event seconds of a clip have their location too).
* the microphone thread (when the hardware has one and the policy records
  sound) reads chunks, encodes them to AAC-LC and queues the packets; the
  capture loop takes them after each frame and routes them as it does the
  video's: into the open clip from the moment recording started, and while
  not recording into the pre-event audio buffer only if the policy keeps
  sound there (by default it does not: the pre-event seconds are picture
  only, as Axon's are).  Audio and video presentation times both come from
  the packets' monotonic capture times, counted from the run's start.
"""

from __future__ import annotations

import heapq
import json
import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..sealed.storage import DeviceStorage
from ..sealed.writer import SealedInfo
from . import space
from .audio_encoder import AacEncoder
from .battery import CRITICAL, LOW, RECOVERED, BatteryWatch
from .clipwriter import AudioFormat, ClipWriter, ClockState, VideoFormat
from .config import CameraConfig
from .encoder import EncoderSettings, H264Encoder
from .indicators import Indicators
from .prebuffer import AudioPreEventBuffer, PreEventBuffer
from .state import (
    Bookmark,
    ButtonDown,
    ButtonUp,
    CameraStateMachine,
    ClipClosed,
    DockChanged,
    Event,
    Fault,
    FaultCleared,
    Indicators as IndicatorsAction,
    Log,
    Mode,
    RecordCommand,
    StartClip,
    StealthChanged,
    StopClip,
    StorageLevel,
    Tick,
    Trigger,
    Warn,
)

log = logging.getLogger("bwv.camera")

TICK_S = 0.25
FIRMWARE_VERSION = "openbwv-0.1"
CLOCK_WARN_S = 2.0  # GNSS time and the camera clock further apart than this: said in the log


def load_clock_state(path: Path) -> ClockState:
    """The dock's last clock sync (written by the dock link); never synced if absent."""
    try:
        doc = json.loads(path.read_text())
        return ClockState(int(doc["sync_utc_us"]), int(doc["offset_us"]))
    except FileNotFoundError:
        return ClockState()
    except (ValueError, KeyError, TypeError) as e:
        log.warning("clock state %s unreadable (%s); treating the clock as never synced", path, e)
        return ClockState()


@dataclass
class CameraReport:
    """What a run did, for the command line and the tests."""

    clips: list[str] = field(default_factory=list)
    sealed: list[SealedInfo] = field(default_factory=list)
    recovered: list[SealedInfo] = field(default_factory=list)
    frames: int = 0
    recorded_frames: int = 0
    bookmarks: int = 0
    location_records: int = 0  # fixes and fix events sealed
    audio_packets: int = 0  # AAC frames sealed
    audio_errors: list[str] = field(default_factory=list)
    battery_alarms: list[str] = field(default_factory=list)
    stealth_changes: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stop_reasons: list[str] = field(default_factory=list)


class Camera:
    def __init__(
        self,
        config: CameraConfig,
        hw,
        storage: DeviceStorage,
        *,
        clock: ClockState = ClockState(),
        on_frame: Callable[[object, "Camera"], None] | None = None,
        on_mode: Callable[[Mode], None] | None = None,
    ):
        self.config = config
        self.hw = hw
        self.storage = storage
        self.clock = clock
        self.on_frame = on_frame
        self.on_mode = on_mode  # told of every change of mode (the dock link serves while DOCKED)
        self.report = CameraReport()
        self.machine = CameraStateMachine(stealth_allowed=config.indicators.stealth_allowed)
        self.indicators = Indicators(hw, config.indicators)
        self.prebuffer = PreEventBuffer(config.prebuffer.seconds, config.prebuffer_max_bytes)
        self._lock = threading.RLock()
        self._start_reason: str | None = None
        self._stop_reason: str | None = None
        self._pending_events: list[dict] = []
        self._clip: ClipWriter | None = None
        self._clip_started_mono = 0.0
        self._stop = threading.Event()
        self._storage_level = space.OK
        self.gnss = getattr(hw, "gnss", None)
        # Fixes taken while not recording, for the pre-event part of the next clip (1 Hz over up to 122 s).
        self._location_backlog: deque[dict] = deque(maxlen=4096)
        self._clock_warned = False
        # Sound: only if the policy records it and the hardware has a microphone.
        self.audio_source = getattr(hw, "audio", None) if config.audio.record else None
        self._audio_queue: queue.SimpleQueue = queue.SimpleQueue()
        self._audio_stop = threading.Event()
        self._audio_thread: threading.Thread | None = None
        self._audio_format: AudioFormat | None = None
        self._audio_failed: str | None = None
        self._audio_failure_reported = False
        self._audio_from = float("inf")  # sound captured before this instant is not put in the clip
        self._start_t = 0.0
        self._audio_prebuffer = AudioPreEventBuffer(
            config.prebuffer.seconds + config.video.keyframe_seconds + 1.0,
            max(1, int((config.prebuffer.seconds + config.video.keyframe_seconds + 1.0) * config.audio.bitrate / 8 * 2)),
        ) if self.audio_source is not None and config.audio.pre_event else None
        self._pts_origin = 0.0
        # Battery: a fuel gauge if the hardware has one; alarms and the critical stop decided by BatteryWatch.
        self.battery = getattr(hw, "battery", None)
        b = config.battery
        self.battery_watch = BatteryWatch(low_pct=b.low_pct, low_minutes=b.low_minutes, critical_pct=b.critical_pct,
                                          critical_minutes=b.critical_minutes, repeat_s=b.alarm_repeat_s)
        self._battery_fault = False
        self._battery_error_logged = False
        # Stealth changes since the camera last left a dock, for the dock's report.
        self.stealth_log: deque[dict] = deque(maxlen=100)
        self.recording_started = threading.Event()  # for tests and `--seconds`
        self._wire_inputs()

    # -- events in ------------------------------------------------------------
    def _wire_inputs(self) -> None:
        hw = self.hw
        hw.button.when_pressed = lambda *_: self.post(ButtonDown(time.monotonic()))
        hw.button.when_released = lambda *_: self.post(ButtonUp(time.monotonic()))
        hw.dock_detect.when_activated = lambda *_: self.post(DockChanged(time.monotonic(), True))
        hw.dock_detect.when_deactivated = lambda *_: self.post(DockChanged(time.monotonic(), False))
        for name, dev in hw.triggers.items():
            dev.when_activated = (lambda n: lambda *_: self.post(Trigger(time.monotonic(), n)))(name)

    def post(self, event: Event) -> None:
        """Run one event through the state machine and carry out what it says, now."""
        with self._lock:
            before = self.machine.mode
            actions = self.machine.handle(event)
            for action in actions:
                self._execute(action)
            if before is Mode.DOCKED and self.machine.mode is not Mode.DOCKED:
                self.stealth_log.clear()  # the dock has had its report; the next one starts with this shift
            if self.on_mode is not None and self.machine.mode is not before:
                self.on_mode(self.machine.mode)

    def _execute(self, action) -> None:
        if isinstance(action, IndicatorsAction):
            self.indicators.recording(action.on)
        elif isinstance(action, StealthChanged):
            # Every change is sealed in the open clip (the policy allowed it; this says when and how).
            record = {"type": "stealth", "on": action.on, "cause": action.cause, "utc_us": time.time_ns() // 1000}
            self.indicators.stealth = action.on
            self.stealth_log.append({k: record[k] for k in ("utc_us", "on", "cause")})
            self.report.stealth_changes.append(record)
            self._pending_events.append(record)
            log.warning("%s (%s)", action.message, action.cause)
        elif isinstance(action, StartClip):
            self._start_reason = action.reason
            self._start_t = time.monotonic()
            log.info("recording: start (%s)", action.reason)
        elif isinstance(action, StopClip):
            self._stop_reason = action.reason
            self.report.stop_reasons.append(action.reason)
            log.info("recording: stop (%s)", action.reason)
        elif isinstance(action, Bookmark):
            self.report.bookmarks += 1
            self._pending_events.append({"type": "bookmark", "t_mono": action.t,
                                         "utc_us": int((time.time() - (time.monotonic() - action.t)) * 1e6)})
            log.info("bookmark")
        elif isinstance(action, Warn):
            self.report.warnings.append(action.kind)
            self.indicators.warn(action.kind)
        elif isinstance(action, Log):
            log.info("%s", action.message)

    def record(self, start: bool, reason: str = "command") -> None:
        self.post(RecordCommand(time.monotonic(), start, reason))

    def stop(self) -> None:
        """Ask the capture loop to finish: close any clip cleanly, then return from run()."""
        self.record(False, "shutdown")
        self._stop.set()

    # -- the capture loop ------------------------------------------------------
    def run(self, *, record_seconds: float | None = None, exit_after_clip: bool = False) -> CameraReport:
        source = self.hw.camera
        if source is None:
            raise RuntimeError("no camera source configured")
        v = self.config.video
        encoder = H264Encoder(EncoderSettings(
            width=source.width, height=source.height, fps=round(source.fps), bitrate=v.bitrate, codec=v.codec,
            preset=v.preset, tune=v.tune, keyframe_seconds=v.keyframe_seconds, input_format="bgr24",
        ))
        self._video = VideoFormat(source.width, source.height, round(source.fps), "h264", v.bitrate)
        self._pts_origin = time.monotonic()
        if self.audio_source is not None:
            audio_encoder = AacEncoder(bitrate=self.config.audio.bitrate)
            self._audio_format = AudioFormat(bitrate=audio_encoder.bitrate, extradata=audio_encoder.extradata)
            self._audio_thread = threading.Thread(target=self._audio_loop, args=(self.audio_source, audio_encoder),
                                                  name="microphone", daemon=True)
            self._audio_thread.start()
        self.post(StorageLevel(time.monotonic(), self._measure_storage()))
        next_tick = time.monotonic() + TICK_S
        try:
            while True:
                try:
                    frame = source.read()
                except Exception as e:  # noqa: BLE001 - a dead camera is a fault, not a crash
                    if type(e).__name__ == "EndOfStream":
                        break
                    log.error("camera source failed: %s", e)
                    self.post(Fault(time.monotonic(), f"camera: {e}"))
                    break
                self.report.frames += 1
                if self.on_frame is not None:
                    self.on_frame(frame, self)
                self._maybe_open_clip()
                if self.machine.mode is Mode.DOCKED:
                    self._route_audio()  # dropped: in the dock the camera neither records nor buffers
                    if self._stop.is_set():
                        break
                    continue  # in the dock: not recording, not buffering
                packets = encoder.encode(frame.pixels, frame.monotonic, frame.utc_ns // 1000)
                self._route(packets)
                self._route_audio()
                now = time.monotonic()
                if record_seconds is not None and self._clip is not None and self._stop_reason is None:
                    if frame.monotonic - self._clip_started_mono >= record_seconds:
                        self.record(False, "duration reached")
                self._maybe_close_clip()
                if now >= next_tick:
                    next_tick = now + TICK_S
                    self.post(Tick(now))
                    self._check_storage()
                    self._take_location()
                    self._check_audio()
                    self._check_battery(now)
                    if self._clip is not None:
                        self._clip.flush_if_due(frame.monotonic)
                if self._stop.is_set() and self._clip is None and self._start_reason is None:
                    break
                if exit_after_clip and self.report.clips and self._clip is None and self._start_reason is None:
                    break
        finally:
            try:
                if self._clip is not None:
                    self._route(encoder.flush())
                    self._close_clip()
            finally:
                self._audio_stop.set()
                if self._audio_thread is not None:
                    self._audio_thread.join(timeout=2.0)
                self.indicators.close()
        return self.report

    # -- battery -------------------------------------------------------------------
    def _check_battery(self, now: float) -> None:
        """Read the gauge; alarm when low, stop cleanly (sealing the open segment) when critical."""
        if self.battery is None:
            return
        try:
            reading = self.battery.read()
        except Exception as e:  # noqa: BLE001 - a gauge that stopped answering is logged, not fatal
            if not self._battery_error_logged:
                self._battery_error_logged = True
                log.error("fuel gauge: %s", e)
            return
        for alarm in self.battery_watch.feed(reading, now):
            self.report.battery_alarms.append(alarm.kind)
            with self._lock:
                if self._clip is not None:
                    self._pending_events.append(alarm.to_event(time.time_ns() // 1000))
            if alarm.kind == LOW:
                self.indicators.battery_alarm(critical=False)
            elif alarm.kind == CRITICAL:
                self.indicators.battery_alarm(critical=True)
                log.error("battery critical (%s): stopping cleanly so the open segment is sealed", alarm.why)
                self._battery_fault = True
                self.post(Fault(time.monotonic(), f"battery critical: {alarm.why}"))
            elif alarm.kind == RECOVERED and self._battery_fault:
                self._battery_fault = False
                self.post(FaultCleared(time.monotonic()))

    def status(self):
        """What the dock is told in HELLO: firmware, battery and the stealth changes since the last dock."""
        from .docklink import CameraStatus

        reading = self.battery_watch.last
        if self.battery is not None:
            try:
                reading = self.battery.read()
            except Exception:  # noqa: BLE001 - the last reading, or none
                pass
        return CameraStatus(
            firmware=FIRMWARE_VERSION,
            battery_pct=reading.level_int if reading is not None else None,
            battery_minutes_left=None if reading is None or reading.minutes_left is None
            else int(reading.minutes_left),
            battery_charging=reading.charging if reading is not None else None,
            stealth_changes=tuple(self.stealth_log),
        )

    # -- sound -------------------------------------------------------------------
    def _audio_loop(self, source, encoder: AacEncoder) -> None:
        """The microphone thread: chunks in, AAC packets onto the queue, until the run ends."""
        try:
            while not self._audio_stop.is_set():
                chunk = source.read()
                for pkt in encoder.encode(chunk):
                    self._audio_queue.put(pkt)
        except Exception as e:  # noqa: BLE001 - a dead microphone must not stop the picture
            if type(e).__name__ == "EndOfStream" and self._audio_stop.is_set():
                return
            self._audio_failed = f"{type(e).__name__}: {e}"
            log.error("microphone failed, recording continues without sound: %s", e)

    def _route_audio(self) -> None:
        """Queued sound into the open clip (from the start instant on), the pre-event buffer (if policy), or away."""
        while True:
            try:
                pkt = self._audio_queue.get_nowait()
            except queue.Empty:
                return
            if self._clip is not None:
                if pkt.t_mono >= self._audio_from:
                    self.report.sealed.extend(self._clip.write(pkt))
                    self.report.audio_packets += 1
            elif self._audio_prebuffer is not None and self.machine.mode is not Mode.DOCKED:
                self._audio_prebuffer.push(pkt)

    def _check_audio(self) -> None:
        """A microphone that died is said once: in the log, to the officer, and in the open clip."""
        if self._audio_failed is None or self._audio_failure_reported:
            return
        self._audio_failure_reported = True
        self.report.audio_errors.append(self._audio_failed)
        self.indicators.warn("microphone_failed")
        with self._lock:
            if self._clip is not None:  # otherwise every later clip's INFO says so ("audio_lost")
                self._pending_events.append({"type": "audio_lost", "reason": self._audio_failed,
                                             "utc_us": time.time_ns() // 1000})

    def _route(self, packets) -> None:
        for pkt in packets:
            if self._clip is not None:
                self.report.sealed.extend(self._clip.write(pkt))
                self.report.recorded_frames += 1
            else:
                self.prebuffer.push(pkt)

    def _maybe_open_clip(self) -> None:
        with self._lock:
            reason = self._start_reason
            if reason is None or self._clip is not None:
                return
            self._start_reason = None
            self._stop_reason = None
        held = self.prebuffer.drain()
        held_audio: list = []
        if self._audio_prebuffer is not None:
            self._route_audio()  # what the microphone thread has queued, into the buffer first
            held_audio = self._audio_prebuffer.drain(held[0].t_mono if held else self._start_t)
            self._audio_from = held[0].t_mono if held else self._start_t
        else:
            self._audio_from = self._start_t  # sound from the moment recording started, not before
        audio_on = self._audio_format is not None
        clip = ClipWriter(
            self.storage, self._video,
            segment_seconds=self.config.video.segment_seconds,
            flush_seconds=self.config.flush_seconds,
            clock=self.clock,
            info={"firmware": FIRMWARE_VERSION, "start_reason": reason,
                  "pre_event_seconds": self.config.prebuffer.seconds,
                  "pre_event_held_seconds": round(held[-1].t_mono - held[0].t_mono, 3) if held else 0.0,
                  "gnss": self.gnss.name if self.gnss is not None else "none",
                  "audio_policy": {"record": self.config.audio.record, "pre_event": self.config.audio.pre_event},
                  "audio_source": self.audio_source.name if self.audio_source is not None else "none",
                  "pre_event_audio": bool(held_audio),
                  # Stealth set before the clip began is in the dock's report; the clip says it began so.
                  "stealth_policy": {"allowed": self.config.indicators.stealth_allowed},
                  "stealth_at_start": self.machine.stealth,
                  **({"audio_lost": self._audio_failed} if self._audio_failed else {})},
            no_fix_reason=self._no_fix_reason,
            audio=self._audio_format if audio_on else None,
            pts_origin_mono=self._pts_origin,
        )
        self._take_location()
        since_us = (held[0].utc_us if held else time.time_ns() // 1000) - 1_000_000
        for record in self._location_backlog:
            if record.get("device_utc_us", 0) >= since_us:  # the fix just before the first frame, and after
                clip.add_location(record)
                self.report.location_records += 1
        self._location_backlog.clear()
        self._clip = clip
        self._clip_started_mono = time.monotonic()
        self.report.clips.append(str(clip.clip_id))
        log.info("clip %s opened with %d pre-event packets", clip.clip_id, len(held))
        # Picture and sound held from before the press, in capture order (the first is a video keyframe).
        for pkt in heapq.merge(held, held_audio, key=lambda p: p.t_mono):
            self.report.sealed.extend(clip.write(pkt))
            if pkt.media == "audio":
                self.report.audio_packets += 1
            else:
                self.report.recorded_frames += 1
        self.recording_started.set()

    def _maybe_close_clip(self) -> None:
        with self._lock:
            events, self._pending_events = self._pending_events, []
            stopping = self._stop_reason is not None and self._clip is not None
        if self._clip is not None:
            for e in events:
                self._clip.add_event(e)
        if stopping:
            self._close_clip()

    def _close_clip(self) -> None:
        clip = self._clip
        assert clip is not None
        with self._lock:
            reason = self._stop_reason or "shutdown"
        self._take_location()
        self._route_audio()  # the sound up to the stop
        clip.add_event({"type": "stop", "reason": reason, "utc_us": time.time_ns() // 1000})
        self.report.sealed.extend(clip.close())
        self._clip = None
        with self._lock:
            self._stop_reason = None
        log.info("clip %s closed: %d segment(s)", clip.clip_id, len(clip.stats.segments))
        self.post(ClipClosed(time.monotonic()))

    # -- location --------------------------------------------------------------
    def _take_location(self) -> None:
        """The fixes and fix events since the last tick: into the open clip, else into the pre-event backlog."""
        if self.gnss is None:
            return
        items = self.gnss.take_fixes()
        if not items:
            return
        records = [item.to_record() for item in items]
        self._check_clock(items)
        if self._clip is not None:
            for record in records:
                self._clip.add_location(record)
            self.report.location_records += len(records)
            return
        self._location_backlog.extend(records)
        horizon = time.time_ns() // 1000 - int((self.config.prebuffer.seconds + 2) * 1e6)
        while self._location_backlog and self._location_backlog[0].get("device_utc_us", 0) < horizon:
            self._location_backlog.popleft()

    def _check_clock(self, items) -> None:
        """GNSS time is a second clock, independent of the dock's sync: say so when they disagree."""
        offsets = [i.clock_offset_us for i in items if hasattr(i, "clock_offset_us")]
        if offsets and abs(offsets[-1]) > CLOCK_WARN_S * 1e6 and not self._clock_warned:
            self._clock_warned = True
            log.warning("camera clock differs from GNSS time by %+.1f s (GNSS minus camera); "
                        "both times are sealed with every fix", offsets[-1] / 1e6)

    def _no_fix_reason(self) -> str | None:
        if self.gnss is None:
            return "no GNSS receiver configured"
        return self.gnss.no_fix_reason()

    # -- storage ---------------------------------------------------------------
    def _measure_storage(self) -> str:
        s = self.config.storage
        reading = space.measure(self.storage.directory, quota_bytes=int(s.quota_mb * 1e6))
        return space.classify(reading.free_bytes, low_warning_bytes=int(s.low_warning_mb * 1e6),
                              reserve_bytes=int(s.reserve_mb * 1e6))

    def _check_storage(self) -> None:
        level = self._measure_storage()
        if level != self._storage_level:
            self._storage_level = level
            log.warning("storage level: %s", level)
            self.post(StorageLevel(time.monotonic(), level))


def open_camera_storage(home, device_id: str) -> DeviceStorage:
    """The device's storage, with anything a crash left open already sealed (see `storage.recovered`)."""
    from ..enrol import device_storage

    return device_storage(home, device_id)


__all__ = ["Camera", "CameraReport", "load_clock_state", "open_camera_storage"]
