"""Frames over a py-libp2p stream: ``uvarint(len) || payload``, buffered reads, chunked writes.

The wire format (docs/protocol.md): each frame is its length as an unsigned LEB128
varint (``libp2p.utils.varint``) followed by that many bytes. A frame larger than
the limit is refused on both sides with :class:`FrameTooLarge`; the receiving side
resets the stream, because it cannot resynchronise.

Yamux (LIBP2P_NOTES §8) kills a writer whose reader stops reading for 5 s, so the
reader pulls data in 64 KiB reads as soon as it is asked for a frame, and writers
send in 64 KiB chunks so one large frame does not monopolise the connection.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.exceptions import BaseLibp2pError, ParseError
from libp2p.network.stream.exceptions import StreamEOF as Libp2pStreamEOF
from libp2p.utils.varint import decode_uvarint, encode_uvarint

from gossipmind.core.errors import NetworkError
from gossipmind.net.interface import MAX_FRAME_SIZE, FrameTooLarge, StreamEOF, TruncatedFrame

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
_MAX_VARINT = 10

# What a py-libp2p stream raises when the stream or its connection breaks: its own
# exception tree (StreamError/StreamReset, MuxedStream*, IOException), plus trio's
# resource errors and OSError from the socket underneath.
LIBP2P_IO_ERRORS: tuple[type[BaseException], ...] = (
    BaseLibp2pError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)


class Libp2pStream:
    """A :class:`~gossipmind.net.interface.Stream` over a libp2p ``INetStream``."""

    def __init__(
        self, raw: Any, remote_peer: str, protocol: str, *, max_frame_size: int = MAX_FRAME_SIZE
    ) -> None:
        self._raw = raw
        self._remote_peer = remote_peer
        self._protocol = protocol
        self._max = max_frame_size
        self._buf = bytearray()
        self._eof = False
        self._closed = False
        self._reset = False
        self._send_lock = trio.Lock()
        self._recv_lock = trio.Lock()

    @property
    def remote_peer(self) -> str:
        return self._remote_peer

    @property
    def protocol(self) -> str:
        return self._protocol

    def __repr__(self) -> str:
        return f"Libp2pStream({self._protocol} <-> {self._remote_peer[:16]})"

    async def send(self, frame: bytes) -> None:
        if len(frame) > self._max:
            raise FrameTooLarge(f"frame of {len(frame)} bytes exceeds the limit of {self._max}")
        if self._closed or self._reset:
            raise NetworkError("stream is closed for sending")
        view = memoryview(frame)
        async with self._send_lock:
            try:
                prefix = encode_uvarint(len(frame))
                first = CHUNK - len(prefix)
                await self._raw.write(prefix + bytes(view[:first]))
                for start in range(first, len(frame), CHUNK):
                    await self._raw.write(bytes(view[start : start + CHUNK]))
            except LIBP2P_IO_ERRORS as exc:
                raise NetworkError(f"send to {self._remote_peer} failed: {exc!r}") from exc

    async def send_unframed(self, data: bytes) -> None:
        """Write bytes as they are, without a length prefix.

        Not for protocols: for tests and the testnet's hostile peer, which must be
        able to send what an honest peer never does (a truncated frame, a bad prefix).
        """
        if self._closed or self._reset:
            raise NetworkError("stream is closed for sending")
        async with self._send_lock:
            try:
                await self._raw.write(bytes(data))
            except LIBP2P_IO_ERRORS as exc:
                raise NetworkError(f"send to {self._remote_peer} failed: {exc!r}") from exc

    async def receive(self) -> bytes:
        async with self._recv_lock:
            length = await self._read_length()
            if length > self._max:
                await self.reset()
                raise FrameTooLarge(
                    f"peer {self._remote_peer} announced a frame of {length} bytes "
                    f"(limit {self._max})"
                )
            while len(self._buf) < length:
                if not await self._fill():
                    raise TruncatedFrame(
                        f"truncated frame from {self._remote_peer}: "
                        f"got {len(self._buf)} of {length} bytes"
                    )
            frame = bytes(self._buf[:length])
            del self._buf[:length]
            return frame

    async def _read_length(self) -> int:
        while True:
            for i, byte in enumerate(self._buf[:_MAX_VARINT]):
                if not byte & 0x80:
                    try:
                        length = decode_uvarint(bytes(self._buf[: i + 1]))
                    except ParseError as exc:  # a 10-byte prefix over 64 bits
                        await self.reset()
                        raise FrameTooLarge(
                            f"peer {self._remote_peer} sent a frame length over 64 bits: {exc}"
                        ) from exc
                    del self._buf[: i + 1]
                    return length
            if len(self._buf) >= _MAX_VARINT:
                # Ten bytes with the continuation bit announce at least 2^70 bytes: an
                # oversized frame (sync.md §1), not a lost link. Counted and penalized as
                # such (``frame_too_large``), never as ``network``, which is not.
                await self.reset()
                raise FrameTooLarge(
                    f"peer {self._remote_peer} sent a frame length prefix over {_MAX_VARINT} bytes"
                )
            if not await self._fill():
                if self._buf:
                    raise TruncatedFrame(f"truncated frame length from {self._remote_peer}")
                raise StreamEOF(f"{self._remote_peer} closed the stream")

    async def _fill(self) -> bool:
        """Read more bytes into the buffer; False at EOF."""
        if self._eof:
            return False
        try:
            data = await self._raw.read(CHUNK)
        except Libp2pStreamEOF:
            self._eof = True
            return False
        except LIBP2P_IO_ERRORS as exc:
            raise NetworkError(f"receive from {self._remote_peer} failed: {exc!r}") from exc
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def close(self) -> None:
        if self._closed or self._reset:
            return
        self._closed = True
        try:
            await self._raw.close()
        except LIBP2P_IO_ERRORS as exc:
            # Closing a stream whose connection already died: nothing left to tell.
            log.debug("closing %r: %r", self, exc)

    async def reset(self) -> None:
        if self._reset:
            return
        self._reset = True
        try:
            await self._raw.reset()
        except LIBP2P_IO_ERRORS as exc:
            # Resetting a stream whose connection already died: nothing left to tell.
            log.debug("resetting %r: %r", self, exc)
