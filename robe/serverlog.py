"""The ``robe serve`` / ``robe serve-user`` log: one JSON line per event on stdout, and its reader.

Both servers (``robe.server`` on kernel sockets, ``robe.userspace_endpoints`` on the userspace
transport) write these records; experiment 1 reads them (``read_record``) to join the server's
side of each connection to the client's. Times are ``time.monotonic_ns()``, the client's clock.

* ``request``: a complete request line arrived (the server answered ``OK``);
* ``closed``: the client closed it (the kernel server: the request's fields again; the userspace
  server: ``subflows_ready``, when each subflow became ready for data at the server);
* ``loser``: a socket closed or reset before any request byte (a RobE attempt the client reset
  after another path won): counted, never mistaken for the connection;
* ``rejected``: a malformed or oversized request line, or a connection idle too long;
* ``accept_failed``: accept() failed for want of resources (the server backs off and goes on).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import IO

from robe_lab.records import Record, RecordKinds


@dataclass(frozen=True)
class Request(Record):
    """A connection's request arrived; ``peer`` is the subflow it came on."""

    EVENT = "request"
    conn: str
    peer: str
    accept_ns: int
    first_bytes_ns: int
    request_done_ns: int
    mptcp: bool | None
    userspace: bool = False
    reply_error: str | None = None


@dataclass(frozen=True)
class SubflowReady:
    """When one subflow became ready for data at the (userspace) server."""

    t_ns: int
    peer: str
    path: int | None = None


@dataclass(frozen=True)
class Closed(Record):
    """The client closed the connection (``closed_ns``); the kernel server repeats the request's
    fields, the userspace server gives its subflows' ready times."""

    EVENT = "closed"
    conn: str
    closed_ns: int
    userspace: bool = False
    peer: str | None = None
    accept_ns: int | None = None
    first_bytes_ns: int | None = None
    request_done_ns: int | None = None
    mptcp: bool | None = None
    reply_error: str | None = None
    subflows_ready: list[SubflowReady] = field(default_factory=list)

    @classmethod
    def of(cls, request: Request, closed_ns: int) -> Closed:
        """The end of the connection whose request was ``request``."""
        return cls(conn=request.conn, closed_ns=closed_ns, userspace=request.userspace, peer=request.peer,
                   accept_ns=request.accept_ns, first_bytes_ns=request.first_bytes_ns,
                   request_done_ns=request.request_done_ns, mptcp=request.mptcp,
                   reply_error=request.reply_error)  # fmt: skip


@dataclass(frozen=True)
class Loser(Record):
    """A socket that closed before sending any request byte."""

    EVENT = "loser"
    peer: str
    accept_ns: int
    closed_ns: int
    mptcp: bool | None
    reason: str


@dataclass(frozen=True)
class Rejected(Record):
    """A connection the server closed: bad request line, or idle too long."""

    EVENT = "rejected"
    reason: str
    peer: str | None = None
    accept_ns: int | None = None
    conn: str | None = None


@dataclass(frozen=True)
class AcceptFailed(Record):
    """accept() failed for want of resources (``reason``: the error's text)."""

    EVENT = "accept_failed"
    reason: str
    accept_ns: int


ServerRecord = Request | Closed | Loser | Rejected | AcceptFailed
SERVER_LOG: RecordKinds[ServerRecord] = RecordKinds("robe server log", [Request, Closed, Loser, Rejected, AcceptFailed])


def write_record(record: ServerRecord, stream: IO[str] | None = None) -> None:
    """One line on ``stream`` (stdout), flushed: the experiment reads it as it comes."""
    out = stream if stream is not None else sys.stdout
    out.write(record.to_line() + "\n")
    out.flush()


def read_record(line: str | bytes) -> ServerRecord:
    """One line of the log as its record (``robe_lab.records.RecordError`` if it is not one)."""
    return SERVER_LOG.read_line(line)
