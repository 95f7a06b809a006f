"""Messages over a byte port: numbering, framing, the replay guard and reply matching.

Both ends of the dock link use a `FrameChannel` over their port (the camera
in firmware/docklink.py, the dock in dock/bay.py), so they number, check
and reject frames the same way.  The protocol itself (bytes <-> messages)
is dock/protocol.py; this module adds only what needs a port and a clock:
waiting, timeouts, and dropping a partial frame that stopped arriving.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable, Mapping

from serial import SerialException

from .errors import (
    BadMessage,
    FrameError,
    LinkClosed,
    LinkError,
    LinkTimeout,
    PeerError,
    ProtocolError,
    ReplayedFrame,
    UnexpectedMessage,
)
from .ports import Port
from .protocol import (
    Frame,
    FrameDecoder,
    Message,
    MessageType,
    SequenceCounter,
    SequenceGuard,
    encode_message,
    parse_message,
)

log = logging.getLogger("bwv.dock.link")

STALL_S = 0.5  # a partial frame that gets no new byte for this long is dropped
READ_MAX = 65536

Rejected = Callable[[ProtocolError, "Frame | None"], None]


class FrameChannel:
    """One end of a dock link.

    `receive` hands back only messages that decoded, fit their type and
    carry a sequence number above the last one (a HELLO starts a new session
    and resets that floor).  Everything else goes to `on_rejected` (the
    camera answers it with ERROR) and is counted in `rejected`.
    """

    def __init__(self, port: Port, *, name: str = "link", on_rejected: Rejected | None = None,
                 stall_s: float = STALL_S, clock: Callable[[], float] = time.monotonic):
        self.port = port
        self.name = name
        self.on_rejected = on_rejected
        self.stall_s = stall_s
        self._clock = clock
        self.decoder = FrameDecoder()
        self.counter = SequenceCounter()
        self.guard = SequenceGuard()
        self.rejected: deque[ProtocolError] = deque(maxlen=64)
        self.rejected_count = 0
        self._inbox: deque[Message] = deque()
        self._last_byte_at: float | None = None
        self._write_lock = threading.Lock()

    # -- sending ---------------------------------------------------------------
    def send(self, mtype: MessageType, fields: Mapping[str, Any], *, reply_to: int | None = None) -> int:
        """Frame and write one message; returns its sequence number."""
        payload = dict(fields)
        if reply_to is not None:
            payload["reply_to"] = reply_to
        seq = self.counter.next()
        data = encode_message(mtype, seq, payload)
        with self._write_lock:
            try:
                self.port.write(data)
                self.port.flush()
            except (SerialException, OSError, ValueError, TypeError) as e:
                raise LinkClosed(f"{self.name}: cannot write: {e}") from None
        log.debug("%s -> %s #%d %s", self.name, MessageType(mtype).name, seq, payload)
        return seq

    def reply(self, request: Message, mtype: MessageType, fields: Mapping[str, Any]) -> int:
        return self.send(mtype, fields, reply_to=request.seq)

    # -- receiving -------------------------------------------------------------
    def receive(self, timeout: float | None) -> Message:
        """The next accepted message; LinkTimeout if none within `timeout` seconds (None: wait for ever)."""
        deadline = None if timeout is None else self._clock() + timeout
        while True:
            if self._inbox:
                return self._inbox.popleft()
            if deadline is not None and self._clock() >= deadline:
                raise LinkTimeout(f"{self.name}: no message within {timeout:g} s")
            data = self._read()
            now = self._clock()
            if data:
                self._last_byte_at = now
                items = self.decoder.feed(data)
            elif self.decoder.pending and self._last_byte_at is not None and now - self._last_byte_at > self.stall_s:
                items = self.decoder.expire()
            else:
                continue
            for item in items:
                self._accept(item)

    def request(self, mtype: MessageType, fields: Mapping[str, Any], expect: MessageType, *,
                timeout: float, attempts: int = 1) -> Message:
        """Send and wait for the reply that names this request; resend (new number) on timeout.

        Only for idempotent requests: a retried one may be carried out twice.
        Replies to earlier requests that turn up late are logged and dropped.
        """
        last: LinkTimeout | None = None
        for attempt in range(max(1, attempts)):
            seq = self.send(mtype, fields)
            try:
                return self._await_reply(seq, expect, timeout)
            except LinkTimeout as e:
                last = e
                log.info("%s: no reply to %s #%d (attempt %d of %d)", self.name, MessageType(mtype).name, seq,
                         attempt + 1, attempts)
        assert last is not None
        raise LinkTimeout(f"{self.name}: no reply to {MessageType(mtype).name} after {attempts} attempt(s)")

    def _await_reply(self, seq: int, expect: MessageType, timeout: float) -> Message:
        deadline = self._clock() + timeout
        while True:
            msg = self.receive(max(0.0, deadline - self._clock()))
            if msg.reply_to == seq:
                if msg.type is MessageType.ERROR:
                    raise PeerError(msg["code"], msg["message"])
                if msg.type is not expect:
                    raise UnexpectedMessage(f"{self.name}: expected {expect.name} in reply to #{seq}, "
                                            f"found {msg.type.name}")
                return msg
            if msg.type is MessageType.ERROR:
                log.warning("%s: peer reported %s: %s", self.name, msg["code"], msg["message"])
            else:
                log.info("%s: dropped %s #%d (reply to #%s, waiting for #%d)", self.name, msg.type.name, msg.seq,
                         msg.reply_to, seq)

    def _read(self) -> bytes:
        try:
            waiting = getattr(self.port, "in_waiting", 0) or 0
            return self.port.read(max(1, min(waiting, READ_MAX)))
        except LinkError:
            raise
        except (SerialException, OSError, ValueError, TypeError, AttributeError) as e:
            raise LinkClosed(f"{self.name}: port closed or device gone: {e}") from None

    def _accept(self, item: Frame | FrameError) -> None:
        if isinstance(item, FrameError):
            self._reject(item, None)
            return
        try:
            msg = parse_message(item)
            if msg.type is MessageType.HELLO:
                self.guard.restart(msg.seq)
            else:
                self.guard.check(msg.seq)
        except (BadMessage, ReplayedFrame) as e:
            self._reject(e, item)
            return
        log.debug("%s <- %s #%d %s", self.name, msg.type.name, msg.seq, dict(msg.fields))
        self._inbox.append(msg)

    def _reject(self, error: ProtocolError, frame: Frame | None) -> None:
        self.rejected.append(error)
        self.rejected_count += 1
        log.warning("%s: rejected: %s", self.name, error)
        if self.on_rejected is not None:
            self.on_rejected(error, frame)


__all__ = ["FrameChannel"]
