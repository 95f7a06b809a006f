"""Byte ports for the dock link: pyserial for real and URL ports, a pty pair for emulation.

On the Pi a cradled camera is a USB CDC-ACM device (/dev/bwv-bay-N, named
by the udev rule in hw/udev) opened with pyserial; `serial_for_url` also
gives `loop://` and `socket://` ports.  In emulation the dock makes a pty
pair per bay and links the camera end's name at a path (`pty:PATH` in the
bays file) that `bwv camera --dock-port PATH` opens with pyserial, exactly
as it would open its USB gadget port.  Everything above this module sees one
`Port` shape: pyserial's `read`/`write`/`flush`/`close` with a read timeout.
"""

from __future__ import annotations

import errno
import fcntl
import os
import select
import struct
import termios
import time
import tty
from pathlib import Path
from typing import Protocol

from .errors import LinkClosed, LinkError

PTY_PREFIX = "pty:"
DEFAULT_TIMEOUT = 0.05


class Port(Protocol):
    """What the link needs of a port (a subset of pyserial's Serial)."""

    timeout: float | None

    def read(self, size: int = 1) -> bytes: ...

    def write(self, data: bytes) -> int | None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class PtyPort:
    """The dock's end (master) of a pty pair; the camera opens the other end with pyserial.

    The dock keeps the camera end open too, so the pair outlives cameras
    coming and going (with no process on the camera end, a pty master reads
    EIO) and the camera end's raw mode set here stays in force.
    """

    def __init__(self, master_fd: int, slave_fd: int, *, timeout: float | None = DEFAULT_TIMEOUT,
                 link: Path | None = None):
        self._master = master_fd
        self._slave = slave_fd
        self.timeout = timeout
        self.link = link
        self.slave_name = os.ttyname(slave_fd)
        self.closed = False

    @classmethod
    def create(cls, link: Path | None = None, *, timeout: float | None = DEFAULT_TIMEOUT) -> "PtyPort":
        """A new pair, the camera end in raw mode, its name linked at `link` if given."""
        master, slave = os.openpty()
        tty.setraw(slave)
        attrs = termios.tcgetattr(slave)
        attrs[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, attrs)
        port = cls(master, slave, timeout=timeout, link=Path(link) if link else None)
        if port.link is not None:
            port.link.parent.mkdir(parents=True, exist_ok=True)
            tmp = port.link.with_name(f".{port.link.name}.tmp-{os.getpid()}")
            if tmp.is_symlink():
                tmp.unlink()
            os.symlink(port.slave_name, tmp)
            os.replace(tmp, port.link)  # replaces a stale link from an earlier run
        return port

    @property
    def in_waiting(self) -> int:
        buf = fcntl.ioctl(self._master, termios.FIONREAD, struct.pack("I", 0))
        return struct.unpack("I", buf)[0]

    def read(self, size: int = 1) -> bytes:
        if self.closed:
            raise LinkClosed("pty port is closed")
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._master], [], [], wait)
            if ready:
                try:
                    return os.read(self._master, size)
                except OSError as e:
                    if e.errno != errno.EIO:
                        raise LinkError(f"pty {self.slave_name}: {e.strerror}") from None
                    time.sleep(min(0.05, wait or 0.05))  # nobody on the camera end yet
            if deadline is not None and time.monotonic() >= deadline:
                return b""

    def write(self, data: bytes) -> int:
        if self.closed:
            raise LinkClosed("pty port is closed")
        view = memoryview(data)
        while view:
            _, ready, _ = select.select([], [self._master], [], 5.0)
            if not ready:
                raise LinkError(f"pty {self.slave_name}: nobody reads the camera end (write blocked 5 s)")
            n = os.write(self._master, view)
            view = view[n:]
        return len(data)

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        termios.tcflush(self._master, termios.TCIFLUSH)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.link is not None and self.link.is_symlink() and os.readlink(self.link) == self.slave_name:
            self.link.unlink()


def open_port(spec: str, *, timeout: float = DEFAULT_TIMEOUT) -> Port:
    """Open the port named in a bays file: `pty:PATH` (emulation) or a device / pyserial URL."""
    if spec.startswith(PTY_PREFIX):
        return PtyPort.create(Path(spec[len(PTY_PREFIX):]), timeout=timeout)
    import serial  # pyserial

    try:
        # The baud rate means nothing to CDC-ACM; a UART would need it to match the camera's.
        return serial.serial_for_url(spec, baudrate=115200, timeout=timeout, write_timeout=5.0)
    except (serial.SerialException, OSError, ValueError) as e:
        raise LinkError(f"cannot open port {spec}: {e}") from None


__all__ = ["PTY_PREFIX", "Port", "PtyPort", "open_port"]
