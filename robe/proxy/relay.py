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
from collections.abc import Callable
from dataclasses import dataclass

from robe.proxy.streams import CHUNK, ByteStream


@dataclass
class RelayResult:
    """Bytes each way and the error that ended the relay, if any."""

    up: int = 0  # client -> server
    down: int = 0  # server -> client
    error: str | None = None


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
        while data := await src.read(chunk):
            dst.write(data)
            if upward:
                result.up += len(data)
            else:
                result.down += len(data)
            await dst.drain()
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
