"""The evidence server's settings: where it listens, what it admits, and its TLS material.

Defaults, then the ``[server]`` table of BWV_HOME/config.toml, then command
line options: the last one given wins.  Every value is checked here, once, so
that a typo stops the server at start with a message naming the setting
rather than surfacing as a strange refusal at the first upload.
"""

from __future__ import annotations

import ssl
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .retention import RetentionPolicy

MIB = 1024 * 1024
GIB = 1024 * MIB
DEFAULT_PORT = 8443


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_concurrent: int = 16  # PATCH requests in progress at once; more get 503 + Retry-After
    reserve_bytes: int = 1 * GIB  # free space the store keeps back; creation past it gets 507
    max_upload_bytes: int = 4 * GIB  # largest Upload-Length accepted; more gets 413
    idle_timeout_s: float = 60.0  # a PATCH body that stalls this long is treated as a cut connection
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # set: mutual TLS, clients must present a certificate it signed
    checkpoint_interval_s: float = 600.0  # how often the audit log's head is signed
    # An unfinished upload untouched this long is discarded (tus "expiration"): the camera still holds the
    # segment and the dock sends it again, so nothing is lost, and abandoned bytes do not fill the store.
    upload_expiry_hours: float = 168.0
    # Where the metadata lives (server/store/url.py): None is the embedded default, SQLite in
    # BWV_HOME/server/evidence.db; or sqlite:///PATH, or postgresql://... shared by several nodes.
    db: str | None = None
    blobs: str = "local"  # where held segments live: BWV_HOME/server/store, or s3://... (blobstore.py)
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)  # the [retention] table
    # The staff web application (server/ui): how long a signed-in browser may sit idle before it must
    # sign in again, and the force's own map tile server ({z}/{x}/{y} URL; none: a map with no tiles).
    ui_idle_minutes: float = 15.0
    map_tiles: str | None = None
    map_attribution: str = ""
    # Who may scrape /metrics without a token (metrics.py says why loopback by default).
    metrics_from: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # The public request page (ui_pages_public.py, sar.PublicLimits): whether it is offered, how wide a
    # request not yet verified may be, and how many a client (and everyone together) may send.
    public_requests: bool = True
    public_max_window_hours: float = 4.0
    public_max_radius_m: float = 500.0
    public_per_client_per_day: int = 3
    public_per_hour: int = 60
    # The time zone the public (and the public page's form) speaks in; stored times stay UTC.
    local_time_zone: str = "Europe/London"
    # Load balancers whose X-Forwarded-For names the real client (for the public page's rate limit);
    # none by default, so a forged header from anyone else is ignored.
    trusted_proxies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        checks = [
            (0 <= self.port <= 65535, f"port {self.port} outside 0..65535"),
            (1 <= self.max_concurrent <= 10_000, f"max concurrent uploads {self.max_concurrent} outside 1..10000"),
            (self.reserve_bytes >= 0, "the free-space reserve cannot be negative"),
            (1 <= self.max_upload_bytes <= 1024 * GIB, "the maximum upload must be between 1 byte and 1 TiB"),
            (0.1 <= self.idle_timeout_s <= 3600, f"idle timeout {self.idle_timeout_s} s outside 0.1..3600"),
            (1 <= self.checkpoint_interval_s <= 86_400,
             f"audit checkpoint interval {self.checkpoint_interval_s} s outside 1..86400"),
            (1 <= self.upload_expiry_hours <= 8760,
             f"upload_expiry_hours = {self.upload_expiry_hours} outside 1..8760 (an hour to a year)"),
            ((self.tls_cert is None) == (self.tls_key is None), "--tls-cert and --tls-key go together"),
            (1 <= self.ui_idle_minutes <= 720, f"web idle expiry {self.ui_idle_minutes} min outside 1..720"),
            (self.map_tiles is None or _is_tile_url(self.map_tiles),
             f"map tiles {self.map_tiles!r}: give an http(s) URL with {{z}}, {{x}} and {{y}} in it"),
            (self.tls_client_ca is None or self.tls_cert is not None, "--tls-client-ca needs --tls-cert and --tls-key"),
            (0.25 <= self.public_max_window_hours <= 48,
             f"public_max_window_hours = {self.public_max_window_hours} outside 0.25..48"),
            (10 <= self.public_max_radius_m <= 5000, f"public_max_radius_m = {self.public_max_radius_m} outside 10..5000"),
            (1 <= self.public_per_client_per_day <= 1000,
             f"public_per_client_per_day = {self.public_per_client_per_day} outside 1..1000"),
            (1 <= self.public_per_hour <= 100_000, f"public_per_hour = {self.public_per_hour} outside 1..100000"),
        ]
        for ok, why in checks:
            if not ok:
                raise ConfigError(why)
        from .metrics import parse_networks

        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(self.local_time_zone)
        except (ValueError, LookupError):
            raise ConfigError(f"local_time_zone = {self.local_time_zone!r} is not a time zone this machine knows "
                              "(for example Europe/London)") from None
        for setting, networks in (("metrics_from", self.metrics_from), ("trusted_proxies", self.trusted_proxies)):
            try:
                parse_networks(networks, setting)
            except ValueError as e:
                raise ConfigError(str(e)) from None

    @property
    def public_limits(self):
        """The public page's bounds, as sar.py applies them."""
        from .sar import PublicLimits

        return PublicLimits(max_window_hours=self.public_max_window_hours, max_radius_m=self.public_max_radius_m,
                            per_client_per_day=self.public_per_client_per_day, per_hour=self.public_per_hour)

    @property
    def scheme(self) -> str:
        return "https" if self.tls_cert else "http"

    def ssl_context(self) -> ssl.SSLContext | None:
        """The server's TLS context (None: plain HTTP, for loopback and tests)."""
        if self.tls_cert is None:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(str(self.tls_cert), str(self.tls_key))
            if self.tls_client_ca is not None:
                ctx.load_verify_locations(cafile=str(self.tls_client_ca))
                ctx.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ssl.SSLError) as e:
            raise ConfigError(f"cannot load the TLS certificate, key or client CA: {e}") from None
        return ctx


def _is_tile_url(url: str) -> bool:
    return (url.startswith(("https://", "http://", "/")) and all(k in url for k in ("{z}", "{x}", "{y}"))
            and not any(c in url for c in "'\"<> \\"))


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8443`` for IPv6) into its parts."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"listen address {text!r} is not HOST:PORT (e.g. 127.0.0.1:8443, 0.0.0.0:8443, [::]:8443)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    value = int(port)
    if value > 65535:
        raise ConfigError(f"port {value} outside 0..65535")
    return host, value


_FILE_KEYS = {
    "listen": str,
    "max_concurrent": int,
    "reserve_mb": (int, float),
    "max_upload_mb": (int, float),
    "idle_timeout_s": (int, float),
    "checkpoint_interval_s": (int, float),
    "upload_expiry_hours": (int, float),
    "tls_cert": str,
    "tls_key": str,
    "tls_client_ca": str,
    "blobs": str,
    "db": str,
    "ui_idle_minutes": (int, float),
    "map_tiles": str,
    "map_attribution": str,
    "metrics_from": list,
    "public_requests": bool,
    "public_max_window_hours": (int, float),
    "public_max_radius_m": (int, float),
    "public_per_client_per_day": int,
    "public_per_hour": int,
    "trusted_proxies": list,
    "local_time_zone": str,
}
_BOOL_KEYS = {"public_requests"}


def settings_from_table(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    """ServerConfig fields from a ``[server]`` table (same names as the command line options)."""
    out: dict[str, Any] = {}
    for key, value in table.items():
        kind = _FILE_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"{where}: unknown setting {key!r}; known: {', '.join(sorted(_FILE_KEYS))}")
        if not isinstance(value, kind) or (isinstance(value, bool) and key not in _BOOL_KEYS):
            raise ConfigError(f"{where}: {key} = {value!r} has the wrong type")
        out[key] = value
    direct = {k: out.pop(k) for k in list(out)
              if k.startswith("public_") or k in ("local_time_zone", "upload_expiry_hours")}
    if "upload_expiry_hours" in direct:
        direct["upload_expiry_hours"] = float(direct["upload_expiry_hours"])
    if "trusted_proxies" in out:
        proxies = out.pop("trusted_proxies")
        if not all(isinstance(x, str) for x in proxies):
            raise ConfigError(f"{where}: trusted_proxies = {proxies!r}: give a list of addresses or networks")
        direct["trusted_proxies"] = tuple(proxies)
    return settings(**out) | direct


def settings(
    *,
    listen: str | None = None,
    max_concurrent: int | None = None,
    reserve_mb: float | None = None,
    max_upload_mb: float | None = None,
    idle_timeout_s: float | None = None,
    tls_cert: str | Path | None = None,
    tls_key: str | Path | None = None,
    tls_client_ca: str | Path | None = None,
    checkpoint_interval_s: float | None = None,
    blobs: str | None = None,
    db: str | None = None,
    ui_idle_minutes: float | None = None,
    map_tiles: str | None = None,
    map_attribution: str | None = None,
    metrics_from: list[str] | None = None,
) -> dict[str, Any]:
    """User-facing settings (MB, HOST:PORT) as ServerConfig fields; None means "not given"."""
    out: dict[str, Any] = {}
    if listen is not None:
        out["host"], out["port"] = parse_listen(listen)
    if max_concurrent is not None:
        out["max_concurrent"] = max_concurrent
    if reserve_mb is not None:
        out["reserve_bytes"] = int(reserve_mb * MIB)
    if max_upload_mb is not None:
        out["max_upload_bytes"] = int(max_upload_mb * MIB)
    if idle_timeout_s is not None:
        out["idle_timeout_s"] = float(idle_timeout_s)
    if checkpoint_interval_s is not None:
        out["checkpoint_interval_s"] = float(checkpoint_interval_s)
    if blobs is not None:
        out["blobs"] = check_blobs(blobs)
    if db is not None:
        out["db"] = check_db(db)
    if ui_idle_minutes is not None:
        out["ui_idle_minutes"] = float(ui_idle_minutes)
    if map_tiles is not None:
        out["map_tiles"] = map_tiles or None
    if map_attribution is not None:
        out["map_attribution"] = map_attribution[:300]
    if metrics_from is not None:
        if not all(isinstance(x, str) for x in metrics_from):
            raise ConfigError(f"metrics_from = {metrics_from!r}: give a list of addresses or networks as strings")
        out["metrics_from"] = tuple(metrics_from)
    for name, value in (("tls_cert", tls_cert), ("tls_key", tls_key), ("tls_client_ca", tls_client_ca)):
        if value is not None:
            out[name] = Path(value)
    return out


def check_blobs(spec: str) -> str:
    """The blob store setting, checked without touching the network: "local" (BWV_HOME/server/store,
    the default) or an s3:// URL whose every part is valid (s3store.parse_s3_url)."""
    if spec == "local":
        return spec
    if spec.startswith("s3://"):
        from .s3store import parse_s3_url

        parse_s3_url(spec)
        return spec
    raise ConfigError(f"blob store {spec!r}: give 'local' (BWV_HOME/server/store) or "
                      "s3://BUCKET[/PREFIX]?endpoint=URL (S3 with Object Lock)")


def check_db(spec: str) -> str:
    """The metadata database setting, checked without touching the network (server/store/url.py):
    sqlite:///PATH (a relative sqlite:PATH is taken from BWV_HOME) or postgresql://USER@HOST:PORT/DBNAME."""
    from .store import parse_database_url

    parse_database_url(spec)
    return spec.strip()


def load_db(config_file: Path | None) -> str | None:
    """Only the metadata database setting of the ``[server]`` table (None: the embedded default)."""
    return load_config(config_file, {}).db


def load_blobs(config_file: Path | None) -> str:
    """Only the blob store setting of the ``[server]`` table (for the commands that need no listener)."""
    return load_config(config_file, {}).blobs


def load_retention(config_file: Path | None) -> RetentionPolicy:
    """Only the ``[retention]`` table (for the commands that need no listening server)."""
    if config_file is None or not Path(config_file).is_file():
        return RetentionPolicy()
    try:
        doc = tomllib.loads(Path(config_file).read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{config_file}: {e}") from None
    return RetentionPolicy.from_table(doc.get("retention"), f"{config_file} [retention]")


def load_config(config_file: Path | None, overrides: Mapping[str, Any]) -> ServerConfig:
    """Defaults, then the file's ``[server]`` table (if the file exists), then `overrides`."""
    values: dict[str, Any] = {}
    if config_file is not None and Path(config_file).is_file():
        try:
            doc = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"{config_file}: {e}") from None
        table = doc.get("server", {})
        if not isinstance(table, dict):
            raise ConfigError(f"{config_file}: [server] must be a table")
        values.update(settings_from_table(table, f"{config_file} [server]"))
        values["retention"] = RetentionPolicy.from_table(doc.get("retention"), f"{config_file} [retention]")
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(ServerConfig)}
    return ServerConfig(**{k: v for k, v in values.items() if k in known})


__all__ = ["ServerConfig", "check_blobs", "check_db", "load_blobs", "load_db", "load_config", "load_retention", "parse_listen", "settings"]
