"""Board files: which GPIO line does what on a given Raspberry Pi.

The pin numbers live in TOML files (``hw/boards/<name>.toml``) rather than in
code so that a hardware revision is a data change that can be reviewed
against the schematic, and so that the emulated camera and the real one are
built from exactly the same wiring.  Loading checks everything that would
otherwise surface as a confusing gpiozero error at start-up, or worse, as a
button that silently never works: missing pins, a line used twice, a reserved
line, a pull resistor that contradicts the active level.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Callable, Literal, Mapping

from .errors import BoardFileError

BOARDS_DIR = Path(__file__).parent / "boards"

PIN_FACTORIES = ("lgpio", "rpigpio")

# The devices every camera has, and whether the firmware drives them or reads them.
REQUIRED_PINS: Mapping[str, Literal["input", "output"]] = MappingProxyType({
    "record_led": "output",
    "status_led": "output",
    "buzzer": "output",
    "button": "input",
    "dock_detect": "input",
})

# Builds the error for a message, with the board file's path attached.
Fail = Callable[[str], BoardFileError]

_PIN_KEYS = {"bcm", "header", "active_high", "pull", "pwm", "bounce_time", "function", "part", "resistor"}
_BOARD_KEYS = {"name", "model", "pin_factory", "mock_revision", "reserved"}
_GNSS_KEYS = {"device", "baud", "function", "part", "wiring"}
# Device-tree model strings (``/proc/device-tree/model``) and the board file for each.
_MODEL_PREFIXES = (("Raspberry Pi 5", "pi5"), ("Raspberry Pi 4", "pi4"))


@dataclass(frozen=True)
class PinSpec:
    """One GPIO line and what is wired to it.

    ``active_high`` is the logical sense: for an input with ``pull == "up"``
    it is always False (pressing shorts the line to ground), which is what
    gpiozero derives from ``pull_up=True`` too.
    """

    name: str
    bcm: int
    header: int
    direction: Literal["input", "output"]
    active_high: bool
    pull: Literal["up", "down", "none"] | None = None
    pwm: bool = False
    bounce_time: float | None = None
    function: str = ""
    part: str = ""
    resistor: str = ""

    @property
    def gpio_name(self) -> str:
        """The name gpiozero's pin factories understand (``"GPIO17"``)."""
        return f"GPIO{self.bcm}"

    @property
    def pull_up(self) -> bool | None:
        """The value gpiozero's input devices take for ``pull_up``."""
        return {"up": True, "down": False, "none": None, None: None}[self.pull]


@dataclass(frozen=True)
class GnssSpec:
    """The GNSS receiver the board carries: which serial port it talks on, and how fast."""

    device: str  # "/dev/serial0": the header UART, BCM 14 (TXD) and 15 (RXD)
    baud: int
    function: str = ""
    part: str = ""
    wiring: str = ""


@dataclass(frozen=True)
class Board:
    """A parsed, checked board file."""

    name: str
    model: str
    pin_factory: str
    mock_revision: str
    source: str
    pins: Mapping[str, PinSpec]
    triggers: Mapping[str, PinSpec]
    reserved: frozenset[int] = field(default_factory=frozenset)
    gnss: GnssSpec | None = None  # None: no receiver on the board (a USB one may still be configured)

    def pin(self, name: str) -> PinSpec:
        """The pin of a device or trigger by name, with an error naming the ones that exist."""
        if name in self.pins:
            return self.pins[name]
        if name in self.triggers:
            return self.triggers[name]
        known = ", ".join(sorted([*self.pins, *self.triggers]))
        raise BoardFileError(f"no pin named {name!r}; the board has {known}", path=self.source)

    def all_pins(self) -> list[PinSpec]:
        """Every wired line, devices first, then triggers."""
        return [*self.pins.values(), *self.triggers.values()]


def available_boards() -> list[str]:
    """The names of the board files shipped with this package."""
    return sorted(p.stem for p in BOARDS_DIR.glob("*.toml"))


def board_path(name_or_path: str | Path) -> Path:
    """Resolve a board name (``"pi5"``) or a path to a board file.

    A bare name is looked up among the shipped boards; anything with a path
    separator or a ``.toml`` suffix is taken as a file, so a fork can keep
    its own wiring outside the package.
    """
    text = str(name_or_path)
    if "/" in text or text.endswith(".toml"):
        return Path(text)
    path = BOARDS_DIR / f"{text}.toml"
    if not path.is_file():
        known = ", ".join(repr(b) for b in available_boards())
        raise BoardFileError(f"no board named {text!r}; expected one of {known} or a path to a .toml file")
    return path


def load_board(name_or_path: str | Path) -> Board:
    """Read and check a board file; see ``hw/boards/pi5.toml`` for the format."""
    path = board_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BoardFileError("board file not found", path=str(path)) from None
    except tomllib.TOMLDecodeError as exc:
        raise BoardFileError(f"not valid TOML: {exc}", path=str(path)) from None
    return parse_board(data, source=str(path))


def parse_board(data: Mapping[str, object], *, source: str = "<board>") -> Board:
    """Check a board file's parsed TOML and build a :class:`Board`."""

    def fail(message: str) -> BoardFileError:
        return BoardFileError(message, path=source)

    unknown_sections = set(data) - {"board", "pins", "triggers", "gnss"}
    if unknown_sections:
        raise fail(f"unknown section(s) {sorted(unknown_sections)}; expected [board], [pins.*], [triggers.*], [gnss]")
    head = _table(data.get("board"), "[board]", fail)
    _no_unknown_keys(head, _BOARD_KEYS, "[board]", fail)
    name = _string(head, "name", "[board]", fail)
    model = _string(head, "model", "[board]", fail)
    pin_factory = _string(head, "pin_factory", "[board]", fail)
    if pin_factory not in PIN_FACTORIES:
        raise fail(f"[board] pin_factory is {pin_factory!r}; expected one of {', '.join(map(repr, PIN_FACTORIES))}")
    mock_revision = _string(head, "mock_revision", "[board]", fail)
    try:
        int(mock_revision, 16)
    except ValueError:
        raise fail(f"[board] mock_revision is {mock_revision!r}; expected a hexadecimal board revision like 'd04170'") from None
    reserved_raw = head.get("reserved", [])
    if not isinstance(reserved_raw, list) or not all(type(r) is int for r in reserved_raw):
        raise fail(f"[board] reserved is {reserved_raw!r}; expected a list of BCM numbers")
    reserved = frozenset(reserved_raw)

    pin_tables = _table(data.get("pins"), "[pins]", fail)
    missing = [n for n in REQUIRED_PINS if n not in pin_tables]
    if missing:
        raise fail(f"missing pin(s) {', '.join(missing)}; every camera needs {', '.join(REQUIRED_PINS)}")
    extra = [n for n in pin_tables if n not in REQUIRED_PINS]
    if extra:
        raise fail(f"unknown pin(s) {', '.join(extra)} under [pins]; optional inputs belong under [triggers]")
    pins = {n: _pin(n, pin_tables[n], REQUIRED_PINS[n], f"[pins.{n}]", fail) for n in REQUIRED_PINS}
    trigger_tables = _table(data.get("triggers", {}), "[triggers]", fail)
    triggers = {n: _pin(n, t, "input", f"[triggers.{n}]", fail) for n, t in trigger_tables.items()}

    by_bcm: dict[int, str] = {}
    by_header: dict[int, str] = {}
    for spec in [*pins.values(), *triggers.values()]:
        if spec.bcm in reserved:
            raise fail(f"{spec.name} is on BCM {spec.bcm}, which [board] reserved keeps free")
        if spec.bcm in by_bcm:
            raise fail(f"BCM {spec.bcm} is used twice: by {by_bcm[spec.bcm]} and by {spec.name}")
        if spec.header in by_header:
            raise fail(f"header pin {spec.header} is used twice: by {by_header[spec.header]} and by {spec.name}")
        by_bcm[spec.bcm] = spec.name
        by_header[spec.header] = spec.name
    if not pins["buzzer"].pwm:
        raise fail("[pins.buzzer] must have pwm = true: the buzzer plays tones")

    gnss = _gnss(data["gnss"], fail) if "gnss" in data else None

    return Board(
        name=name,
        model=model,
        pin_factory=pin_factory,
        mock_revision=mock_revision,
        source=source,
        pins=MappingProxyType(pins),
        triggers=MappingProxyType(triggers),
        reserved=reserved,
        gnss=gnss,
    )


def _gnss(raw: object, fail: Fail) -> GnssSpec:
    table = _table(raw, "[gnss]", fail)
    _no_unknown_keys(table, _GNSS_KEYS, "[gnss]", fail)
    device = _string(table, "device", "[gnss]", fail)
    baud = _int(table, "baud", "[gnss]", fail)
    if not 300 <= baud <= 921_600:
        raise fail(f"[gnss] baud is {baud}; expected a serial speed from 300 to 921600, e.g. 9600")
    text = {k: table.get(k, "") for k in ("function", "part", "wiring")}
    for key, value in text.items():
        if not isinstance(value, str):
            raise fail(f"[gnss] {key} is {value!r}; expected a string")
    return GnssSpec(device, baud, **text)


def detect_board(model_file: Path = Path("/proc/device-tree/model")) -> str:
    """The board file for the Pi this runs on, from the device tree's model string."""
    try:
        model = model_file.read_bytes().rstrip(b"\0").decode("ascii", "replace").strip()
    except OSError as exc:
        raise BoardFileError(
            f"board 'auto' reads the model from {model_file}, which cannot be read here ({exc.strerror}); "
            f"set the board explicitly to one of {', '.join(map(repr, available_boards()))}"
        ) from None
    for prefix, board in _MODEL_PREFIXES:
        if model.startswith(prefix):
            return board
    raise BoardFileError(
        f"board 'auto' found model {model!r} in {model_file}; expected a Raspberry Pi 4 or 5. "
        "Write a board file for it and pass its path"
    )


def _pin(name: str, raw: object, direction: Literal["input", "output"], where: str, fail: Fail) -> PinSpec:
    table = _table(raw, where, fail)
    _no_unknown_keys(table, _PIN_KEYS, where, fail)
    bcm = _int(table, "bcm", where, fail)
    if not 0 <= bcm <= 27:
        raise fail(f"{where} bcm is {bcm}; the 40-pin header carries BCM 0 to 27")
    header = _int(table, "header", where, fail)
    if not 1 <= header <= 40:
        raise fail(f"{where} header is {header}; expected a pin number from 1 to 40")
    active_high = table.get("active_high")
    if not isinstance(active_high, bool):
        raise fail(f"{where} active_high is {active_high!r}; expected true or false")
    text = {k: table.get(k, "") for k in ("function", "part", "resistor")}
    for key, value in text.items():
        if not isinstance(value, str):
            raise fail(f"{where} {key} is {value!r}; expected a string")
    if direction == "output":
        for key in ("pull", "bounce_time"):
            if key in table:
                raise fail(f"{where} has {key}, which only inputs take")
        pwm = table.get("pwm", False)
        if not isinstance(pwm, bool):
            raise fail(f"{where} pwm is {pwm!r}; expected true or false")
        return PinSpec(name, bcm, header, "output", active_high, pwm=pwm, **text)

    if "pwm" in table:
        raise fail(f"{where} has pwm, which only outputs take")
    pull = table.get("pull")
    if pull not in ("up", "down", "none"):
        raise fail(f"{where} pull is {pull!r}; expected 'up', 'down' or 'none' (external resistor)")
    if pull == "up" and active_high:
        raise fail(f"{where} has pull 'up' with active_high = true; a pulled-up input is active low (the switch goes to GND)")
    if pull == "down" and not active_high:
        raise fail(f"{where} has pull 'down' with active_high = false; a pulled-down input is active high")
    bounce = table.get("bounce_time")
    if bounce is not None and (isinstance(bounce, bool) or not isinstance(bounce, (int, float)) or not 0 <= bounce < 1):
        raise fail(f"{where} bounce_time is {bounce!r}; expected seconds from 0 to 1")
    return PinSpec(name, bcm, header, "input", active_high, pull=pull,
                   bounce_time=None if bounce is None else float(bounce), **text)


def _table(raw: object, where: str, fail: Fail) -> dict:
    if not isinstance(raw, dict):
        raise fail(f"{where} is missing or not a table (found {type(raw).__name__})")
    return raw


def _no_unknown_keys(table: Mapping[str, object], allowed: set[str], where: str, fail: Fail) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise fail(f"{where} has unknown key(s) {sorted(unknown)}; expected some of {sorted(allowed)}")


def _string(table: Mapping[str, object], key: str, where: str, fail: Fail) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise fail(f"{where} {key} is {value!r}; expected a non-empty string")
    return value


def _int(table: Mapping[str, object], key: str, where: str, fail: Fail) -> int:
    value = table.get(key)
    if type(value) is not int:
        raise fail(f"{where} {key} is {value!r}; expected an integer")
    return value
