"""Camera configuration: defaults a force can pilot with, overridable from a TOML file.

Every key is checked: an unknown key or a value out of range is an error that
names the file, the key and what is allowed, because a mistyped
`beep_interval_s` silently ignored would break a promise made to the public.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """The camera configuration is unreadable or holds an invalid value."""


@dataclass(frozen=True)
class VideoConfig:
    """Encoding settings.  Picture size and frame rate are the camera source's ([camera.hardware])."""

    bitrate: int = 8_000_000
    codec: str = "libx264"  # "h264_v4l2m2m" on a Pi 4
    preset: str = "veryfast"
    tune: str = "zerolatency"  # a frame's packet leaves the encoder at once: nothing held back at a crash
    keyframe_seconds: float = 1.0
    segment_seconds: float = 10.0


@dataclass(frozen=True)
class PrebufferConfig:
    seconds: float = 30.0  # 0..120, as the leading vendors allow
    max_mb: float = 0.0  # byte bound; 0 = derived from seconds and bitrate with headroom


@dataclass(frozen=True)
class IndicatorConfig:
    flash_hz: float = 2.0
    duty: float = 0.5
    beep_interval_s: float = 10.0
    beep_hz: float = 2000.0
    beep_ms: float = 120.0
    stealth_allowed: bool = False  # policy: may an officer turn the indicators off?


@dataclass(frozen=True)
class AudioPolicyConfig:
    """Sound policy, set by the force ([camera.audio]); recorded in every segment's sealed metadata."""

    record: bool = True  # policy: record sound with the picture (some forces forbid it in some settings)
    pre_event: bool = False  # policy: keep sound in the pre-event buffer too (Axon's default: picture only)
    bitrate: int = 64_000  # AAC-LC, 48 kHz mono


@dataclass(frozen=True)
class BatteryPolicyConfig:
    """When the battery alarms, and when the camera stops to seal before the power goes ([camera.battery])."""

    low_pct: float = 10.0
    low_minutes: float = 10.0
    critical_pct: float = 3.0
    critical_minutes: float = 2.0
    alarm_repeat_s: float = 120.0


@dataclass(frozen=True)
class StorageConfig:
    low_warning_mb: float = 2000.0  # warn (distinct LED/beep pattern) below this much free
    reserve_mb: float = 200.0  # stop recording cleanly below this much free
    quota_mb: float = 0.0  # 0: the whole filesystem is the camera's


@dataclass(frozen=True)
class CameraConfig:
    device_id: str = ""  # "": the only device enrolled under BWV_HOME
    flush_seconds: float = 0.5  # durability interval: at most this much video is lost to a power cut
    hardware: dict = field(default_factory=dict)  # the [camera.hardware] table, read by openbwv.hw
    video: VideoConfig = field(default_factory=VideoConfig)
    prebuffer: PrebufferConfig = field(default_factory=PrebufferConfig)
    indicators: IndicatorConfig = field(default_factory=IndicatorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    audio: AudioPolicyConfig = field(default_factory=AudioPolicyConfig)
    battery: BatteryPolicyConfig = field(default_factory=BatteryPolicyConfig)

    @property
    def prebuffer_max_bytes(self) -> int:
        if self.prebuffer.max_mb > 0:
            return int(self.prebuffer.max_mb * 1e6)
        # Twice the nominal bitrate for the buffered seconds plus one GOP: keyframes
        # and busy scenes overshoot the average.
        seconds = self.prebuffer.seconds + self.video.keyframe_seconds
        return int(max(1.0, seconds) * self.video.bitrate / 8 * 2)

    def validate(self) -> "CameraConfig":
        v, p, i, s = self.video, self.prebuffer, self.indicators, self.storage
        checks = [
            (0.05 <= self.flush_seconds <= 1.0, "flush_seconds", "0.05 to 1 (at most a second may be lost)"),
            (100_000 <= v.bitrate <= 100_000_000, "video.bitrate", "100000 to 100000000 bit/s"),
            (0.1 <= v.keyframe_seconds <= 10, "video.keyframe_seconds", "0.1 to 10"),
            (1 <= v.segment_seconds <= 3600, "video.segment_seconds", "1 to 3600"),
            (0 <= p.seconds <= 120, "prebuffer.seconds", "0 to 120"),
            (p.max_mb >= 0, "prebuffer.max_mb", "0 (automatic) or more"),
            (0.2 <= i.flash_hz <= 20, "indicators.flash_hz", "0.2 to 20"),
            (0.05 <= i.duty <= 0.95, "indicators.duty", "0.05 to 0.95"),
            (1 <= i.beep_interval_s <= 300, "indicators.beep_interval_s", "1 to 300"),
            (100 <= i.beep_hz <= 8000, "indicators.beep_hz", "100 to 8000"),
            (20 <= i.beep_ms <= 2000, "indicators.beep_ms", "20 to 2000"),
            (s.reserve_mb >= 0 and s.low_warning_mb >= s.reserve_mb, "storage.low_warning_mb/reserve_mb",
             "reserve >= 0 and low warning >= reserve"),
            (s.quota_mb >= 0, "storage.quota_mb", "0 (whole filesystem) or more"),
            (16_000 <= self.audio.bitrate <= 320_000, "audio.bitrate", "16000 to 320000 bit/s"),
            (0 <= self.battery.critical_pct < self.battery.low_pct <= 50, "battery.critical_pct/low_pct",
             "0 <= critical < low <= 50"),
            (0 <= self.battery.critical_minutes < self.battery.low_minutes <= 120,
             "battery.critical_minutes/low_minutes", "0 <= critical < low <= 120"),
            (5 <= self.battery.alarm_repeat_s <= 3600, "battery.alarm_repeat_s", "5 to 3600"),
        ]
        for ok, key, allowed in checks:
            if not ok:
                raise ConfigError(f"{key}: value out of range; allowed: {allowed}")
        return self


_SECTIONS = {"video": VideoConfig, "prebuffer": PrebufferConfig, "indicators": IndicatorConfig, "storage": StorageConfig,
             "audio": AudioPolicyConfig, "battery": BatteryPolicyConfig}


def _typed(cls: type, key: str, value: Any, where: str) -> Any:
    wanted = {f.name: f.type for f in fields(cls)}[key]
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}.get(str(wanted), (object,))
    if isinstance(value, bool) and str(wanted) != "bool" or not isinstance(value, kinds):
        raise ConfigError(f"{where}: {key} must be {wanted}, found {type(value).__name__} {value!r}")
    return float(value) if str(wanted) == "float" else value


def _merge(cls: type, base: Any, table: dict[str, Any], where: str) -> Any:
    names = {f.name for f in fields(cls)}
    changes = {}
    for key, value in table.items():
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(sorted(names))})")
        if key == "hardware" and cls is CameraConfig:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [hardware] must be a table")
            changes[key] = value
        elif key in _SECTIONS and cls is CameraConfig:
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: [{key}] must be a table")
            changes[key] = _merge(_SECTIONS[key], getattr(base, key), value, f"{where} [{key}]")
        else:
            changes[key] = _typed(cls, key, value, where)
    return replace(base, **changes)


def load_config(path: Path | None, **overrides: Any) -> CameraConfig:
    """Defaults, then the file (if given), then command-line overrides; validated."""
    config = CameraConfig()
    if path is not None:
        try:
            doc = tomllib.loads(Path(path).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML: {e}") from None
        camera = doc.pop("camera", {})
        if doc:
            raise ConfigError(f"{path}: unknown top-level table(s) {sorted(doc)}; settings go under [camera]")
        config = _merge(CameraConfig, config, camera, str(path))
    for key, value in overrides.items():
        if value is None:
            continue
        if "." in key:
            section, name = key.split(".", 1)
            config = replace(config, **{section: replace(getattr(config, section), **{name: value})})
        else:
            config = replace(config, **{key: value})
    try:
        return config.validate()
    except ConfigError as e:
        raise ConfigError(f"{path or 'camera settings'}: {e}") from None
