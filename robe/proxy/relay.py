"""Relay two byte streams both ways with half-close and backpressure.

Each direction reads a bounded chunk, writes it and waits for ``drain`` before reading again, so
at most one chunk per direction sits in the relay besides the transports' own bounded buffers.
The end of one direction (EOF) is passed on with ``write_eof`` while the other direction keeps
flowing. When both directions ended, both streams are closed in order; an error in either
direction (a reset) aborts both at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from robe.proxy.streams import CHUNK, ByteStream


@dataclass
class RelayResult:
    """Bytes each way, when they moved (``time.monotonic_ns()``; None when nothing moved) and the
    error that ended the relay, if any. ``*_eof_ns``: when that direction's end (EOF) was read."""

    up: int = 0  # client -> server
    down: int = 0  # server -> client
    error: str | None = None
    first_up_ns: int | None = None
    last_up_ns: int | None = None
    first_down_ns: int | None = None
    last_down_ns: int | None = None
    up_eof_ns: int | None = None
    down_eof_ns: int | None = None

    def timing(self) -> dict[str, int | None]:
        """The timestamps, for a connection log line."""
        return {name: getattr(self, name) for name in _TIMING_FIELDS}


_TIMING_FIELDS = ("first_up_ns", "last_up_ns", "first_down_ns", "last_down_ns", "up_eof_ns", "down_eof_ns")


def describe(err: BaseException) -> str:
    """A short reason for the connection log: the errno's text and name for system errors
    (asyncio words every failed connect "Connect call failed")."""
    if isinstance(err, OSError) and err.errno:
        return f"{os.strerror(err.errno)} ({errno.errorcode.get(err.errno, err.errno)})"
    text = str(err)
    if isinstance(err, OSError) and text:
        return text
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


async def relay(
    client: ByteStream,
    server: ByteStream,
    chunk: int = CHUNK,
    before_close: Callable[[], None] | None = None,
) -> RelayResult:
    """Move bytes until both directions ended (or one failed); both streams are closed on return.

    ``before_close`` runs once both directions are done, before the streams are closed or aborted
    (to read connection state, e.g. MPTCP subflows).
    """
    result = RelayResult()

    async def pump(src: ByteStream, dst: ByteStream, upward: bool) -> None:
        direction = "up" if upward else "down"
        while data := await src.read(chunk):
            now = time.monotonic_ns()
            dst.write(data)
            if upward:
                result.up += len(data)
            else:
                result.down += len(data)
            if getattr(result, f"first_{direction}_ns") is None:
                setattr(result, f"first_{direction}_ns", now)
            setattr(result, f"last_{direction}_ns", now)
            await dst.drain()
        setattr(result, f"{direction}_eof_ns", time.monotonic_ns())
        dst.write_eof()

    tasks = [asyncio.create_task(pump(client, server, True)), asyncio.create_task(pump(server, client, False))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        client.abort()
        server.abort()
        raise
    failed = [err for t in tasks if t.done() and (err := t.exception()) is not None]
    if before_close is not None:
        before_close()
    if failed:
        result.error = describe(failed[0])
        for task in tasks:
            task.cancel()
        client.abort()
        server.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        return result
    for stream in (client, server):
        with contextlib.suppress(OSError):
            await stream.close()
    return result
