"""Sans-IO connection state machines of the userspace RobE transport (client and server side).

No sockets and no clock: the I/O layer reports what happened to subflows (a TCP connect finished,
bytes arrived, a subflow closed) and carries out the returned outputs (write bytes on a subflow,
open a subflow on a path, close or reset one). Events for the application come out of the same
lists.

Strategies on the client (the server follows the frames it receives):

* ``mptcp-user``: classic RFC 8684 timing. CAP on the default path; joins start only after the
  CAP_ACK (the first data-ack); a joined subflow carries data only after its fourth ACK (the
  server's DATA_ACK answering JOIN_FIN).
* ``robe-downgrade`` (the paper's Proposal 1): a potentially initial subflow on every path at once;
  the first TCP connection to complete sends the CAP and becomes the initial subflow; each later
  one is attached as a subsequent subflow on both ends with CAP_ATTACH(Key-A, HMAC over Key-A,
  Key-B): at once when Key-B is known, else as soon as the CAP_ACK brings it (at most one per
  declared path). The server attaches only on a valid HMAC, so guessing Key-A is not enough.
* ``robe-bbm`` (Proposal 2, break before make): the first completed attempt wins, the others are
  reset at once; once the CAP_ACK arrives the other paths join as in ``mptcp-user``.
* ``robe-esim`` (the drafts' RobE_eSIM): every later attempt sends a CAP with its own Key-A'; once
  it has its own Key-B' and the winner's Key-B it is recycled with JOIN_CAP(Key-A, HMAC over
  Key-A, Key-B, Key-B') instead of being reset, and carries data at once.
* ``robe-ips-user`` (RobE_IPS on this transport): ``mptcp-user`` with the CAP on the first path of
  ``order`` (the path history's choice, ``robe.selection.plan``) instead of the default path.

Data sequence numbers are unbounded integers here, starting at the sender's IDSN (RFC 8684); on the
wire they travel modulo 2^64 and are expanded against the receiver's position.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from robe.protocol import crypto
from robe.protocol.frames import (
    MAX_DATA,
    Cap,
    CapAck,
    CapAttach,
    Data,
    DataAck,
    DataFin,
    Decoder,
    Frame,
    FrameError,
    Join,
    JoinAck,
    JoinCap,
    JoinFin,
    ResetReason,
    Rst,
)
from robe.protocol.reassembly import Reassembly, TooFragmentedError, WindowViolationError
from robe.protocol.sending import SCHEDULERS, SendBuffer, SubflowView
from robe.strategies import Kind, get_strategy, names

VERSION = 1
#: Frames taken from one subflow per ``receive`` call at most. A read of one-byte DATA frames holds
#: thousands (a 256 KiB read: 20,000); handling them all at once would stall an event loop for tens
#: of milliseconds. The rest stay in the subflow's decoder (``input_pending``) for the next call.
#: Legitimate frames carry up to 16 KiB each, so this never slows a real transfer.
FRAMES_PER_CALL = 256
WRAP = 1 << 64
#: The strategies this state machine implements: the userspace ones of the registry.
USER_STRATEGIES = names(Kind.USERSPACE)
MAX_REJOINS = 32  # per path and connection: a path that keeps dying is given up


def expand(wire: int, reference: int) -> int:
    """The unbounded sequence number nearest ``reference`` whose value modulo 2^64 is ``wire``."""
    return reference + ((wire - reference + WRAP // 2) % WRAP) - WRAP // 2


# -- outputs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transmit:
    """Write ``data`` on subflow ``sid``."""

    sid: int
    data: bytes


@dataclass(frozen=True)
class OpenSubflow:
    """Client: open a TCP subflow on ``path`` and report it with ``subflow_connected``; ``initial``: a
    potentially initial subflow of connect() (the cost columns' attempts), not a join."""

    path: int
    initial: bool = False


@dataclass(frozen=True)
class CloseSubflow:
    """Close subflow ``sid``: with an RST frame and abort if ``reason`` is set, else orderly."""

    sid: int
    reason: ResetReason | None


@dataclass(frozen=True)
class Established:
    """The connection exists: ``sid`` on ``path`` is its initial subflow."""

    sid: int
    path: int


@dataclass(frozen=True)
class SubflowReady:
    """Subflow ``sid`` on ``path`` may carry data from now on."""

    sid: int
    path: int


@dataclass(frozen=True)
class DataReceived:
    """In-order application bytes."""

    data: bytes


@dataclass(frozen=True)
class StreamEnded:
    """The peer's stream ended (DATA_FIN reached)."""


@dataclass(frozen=True)
class Superseded:
    """Server: the connection keyed ``key_a`` was a losing eSIM attempt, now merged into another."""

    key_a: int


@dataclass(frozen=True)
class ConnectionReleased:
    """Server: the connection keyed ``key_a`` has no subflow left and is forgotten (its token too);
    ``ended`` says whether the client's stream had ended (DATA_FIN) first."""

    key_a: int
    ended: bool


@dataclass(frozen=True)
class SubflowFailed:
    """Subflow ``sid`` was reset, for ``reason`` (logged by the I/O layer)."""

    sid: int
    reason: ResetReason
    detail: str


Output = (
    Transmit
    | OpenSubflow
    | CloseSubflow
    | Established
    | SubflowReady
    | DataReceived
    | StreamEnded
    | SubflowFailed
    | Superseded
    | ConnectionReleased
)


class SubflowState(enum.StrEnum):
    """Where one subflow stands."""

    CONNECTING = "connecting"  # client: TCP connect in progress
    CAP_SENT = "cap_sent"  # potentially initial: CAP sent, no CAP_ACK yet
    ATTACH_WAIT = "attach_wait"  # downgrade: connected, waiting for Key-B to send CAP_ATTACH
    JOIN_SENT = "join_sent"  # JOIN sent, waiting for JOIN_ACK
    JOIN_FIN_SENT = "join_fin_sent"  # JOIN_FIN sent, waiting for the fourth ACK
    JOIN_ACK_SENT = "join_ack_sent"  # server: JOIN_ACK sent, waiting for JOIN_FIN
    READY = "ready"  # carries data
    CLOSED = "closed"


@dataclass
class Subflow:
    """Per-subflow protocol state."""

    sid: int
    path: int
    state: SubflowState
    decoder: Decoder = field(default_factory=Decoder)
    nonce_self: int = 0
    nonce_peer: int = 0
    srtt_us: int = 1_000_000
    writable: bool = True
    key_b_prime: int | None = None  # eSIM: the key the server answered this losing attempt with


@dataclass
class Endpoint:
    """What both roles share: the data stream in both directions and the subflows."""

    window: int = 1 << 20
    send_limit: int = 1 << 20
    subflows: dict[int, Subflow] = field(default_factory=dict)
    send: SendBuffer | None = None
    recv: Reassembly | None = None
    fin_at: int | None = None
    fin_sent: bool = False
    fin_sid: int | None = None  # the subflow that carried our DATA_FIN
    closing: bool = False
    ended: bool = False
    abandoned: bool = False  # the application closed or aborted the connection (``abandon``)
    pending_writes: bytearray = field(default_factory=bytearray)
    scheduler: str = "lowest-rtt"  # a name of robe.protocol.sending.SCHEDULERS

    # -- data path ----------------------------------------------------------------------------

    def start_streams(self, local_key: int, peer_key: int) -> None:
        """Both keys are known: data sequence numbers start at the IDSNs."""
        self.send = SendBuffer(acked_dsn=crypto.idsn(local_key), limit=self.send_limit)
        self.recv = Reassembly(next_dsn=crypto.idsn(peer_key), window=self.window)
        if self.pending_writes:
            self.send.write(bytes(self.pending_writes))
            self.pending_writes.clear()

    def write(self, data: bytes) -> int:
        """Queue application bytes; returns how many were taken (backpressure)."""
        if self.closing:
            raise RuntimeError("write after close")
        if self.send is None:
            room = self.send_limit - len(self.pending_writes)
            self.pending_writes += data[:room]
            return min(len(data), room)
        return self.send.write(data)

    def close(self) -> None:
        """End our stream once everything written is sent (DATA_FIN)."""
        self.closing = True

    def abandon(self) -> list[Output]:
        """The application is done with this connection (closed or aborted it): from now on no
        subflow joins it; subflows still in their handshake are reset now (the ready ones are the
        application's to close)."""
        self.abandoned = True
        out: list[Output] = []
        for flow in [f for f in self.subflows.values() if f.state is not SubflowState.READY]:
            out += self.reset_subflow(flow, ResetReason.CLOSED, "the connection was closed")
        return out

    @property
    def finished(self) -> bool:
        """Both streams ended and every byte we sent is acknowledged: nothing is left to carry."""
        return self.ended and self.fin_sent and (self.send is None or self.send.acked_dsn == self.send.end_dsn)

    def takes_subflows(self) -> bool:
        """Whether a new subflow may still join: not abandoned and not finished. A subflow that
        completes its handshake after the connection's last byte could carry nothing, and nobody
        would ever close it (the application has let go of the connection)."""
        return not self.abandoned and not self.finished

    def set_path_info(self, sid: int, srtt_us: int, writable: bool) -> None:
        """The I/O layer's view of a subflow: smoothed RTT and whether its socket takes more."""
        flow = self.subflows.get(sid)
        if flow is not None:
            flow.srtt_us, flow.writable = srtt_us, writable

    def pump(self) -> list[Output]:
        """DATA frames for the scheduler's choice of subflows, then DATA_FIN when done."""
        out: list[Output] = []
        if self.send is None:
            return out
        send = self.send
        pick = SCHEDULERS[self.scheduler]

        def views() -> list[SubflowView]:  # in list order: the kernel scheduler breaks ties by it
            return [SubflowView(f.sid, f.state is SubflowState.READY, f.writable, f.srtt_us, send.in_flight(f.sid))
                    for f in self.subflows.values()]  # fmt: skip

        budget = 64  # frames per call: bounded work, the I/O layer calls again when writable
        while budget and send.has_pending():
            sid = pick(views())
            if sid is None:
                break
            chunk = send.next_chunk(sid, MAX_DATA)
            if chunk is None:
                break
            dsn, data = chunk
            out.append(Transmit(sid, Data(dsn % WRAP, data).encode()))
            budget -= 1
        if self.closing and not self.fin_sent and not send.has_pending():
            sid = pick(views())
            if sid is not None:
                out.append(Transmit(sid, DataFin(self.send.end_dsn % WRAP).encode()))
                self.fin_sent, self.fin_sid = True, sid
        return out

    def on_data(self, flow: Subflow, frame: Data) -> list[Output]:
        """Reassemble; acknowledge on the same subflow."""
        assert self.recv is not None
        dsn = expand(frame.dsn, self.recv.next_dsn)
        if self.fin_at is not None and dsn + len(frame.data) > self.fin_at:
            return self.reset_subflow(flow, ResetReason.MALFORMED, f"data up to {dsn + len(frame.data)} after "
                                      f"the DATA_FIN at {self.fin_at}")  # fmt: skip
        try:
            delivered = self.recv.add(dsn, frame.data)
        except WindowViolationError as err:
            return self.reset_subflow(flow, ResetReason.MALFORMED, str(err))
        except TooFragmentedError as err:
            return self.reset_subflow(flow, ResetReason.FRAGMENTED, str(err))
        out: list[Output] = []
        if delivered:
            out.append(DataReceived(delivered))
        out.append(Transmit(flow.sid, DataAck(self.recv.next_dsn % WRAP, self.window).encode()))
        out += self._maybe_ended()
        return out

    def on_data_fin(self, flow: Subflow, frame: DataFin) -> list[Output]:
        """Remember where the peer's stream ends: never before data already received, never moved."""
        assert self.recv is not None
        fin_at = expand(frame.dsn, self.recv.next_dsn)
        if self.fin_at is not None and fin_at != self.fin_at:
            return self.reset_subflow(flow, ResetReason.MALFORMED, f"DATA_FIN moved from {self.fin_at} to {fin_at}")
        if fin_at < self.recv.highest_end:
            return self.reset_subflow(flow, ResetReason.MALFORMED, f"DATA_FIN at {fin_at} before data already "
                                      f"received up to {self.recv.highest_end}")  # fmt: skip
        self.fin_at = fin_at
        return self._maybe_ended()

    def _maybe_ended(self) -> list[Output]:
        if self.recv is not None and self.fin_at is not None and not self.ended and self.recv.next_dsn >= self.fin_at:
            self.ended = True
            return [StreamEnded()]
        return []

    def on_data_ack(self, flow: Subflow, data_ack: int) -> list[Output]:
        """Cumulative acknowledgement of our stream; acknowledging unsent data resets the subflow."""
        if self.send is not None:
            try:
                self.send.ack(expand(data_ack, self.send.acked_dsn))
            except ValueError as err:
                return self.reset_subflow(flow, ResetReason.MALFORMED, str(err))
        return []

    # -- subflow failures ---------------------------------------------------------------------

    def reset_subflow(self, flow: Subflow, reason: ResetReason, detail: str) -> list[Output]:
        """Answer a protocol violation with RST and forget the subflow (its data is reinjected)."""
        out: list[Output] = []
        if flow.state is not SubflowState.CLOSED:
            out.append(Transmit(flow.sid, Rst(reason).encode()))
            out.append(CloseSubflow(flow.sid, reason))
        out.append(SubflowFailed(flow.sid, reason, detail))
        self.drop_subflow(flow.sid)
        return out

    def drop_subflow(self, sid: int) -> None:
        """The subflow is gone: queue its unacknowledged data for the others."""
        flow = self.subflows.pop(sid, None)
        if flow is not None:
            flow.state = SubflowState.CLOSED
            if self.send is not None:
                self.send.subflow_died(sid)
            if sid == self.fin_sid:  # the DATA_FIN may have died with it: send it again (idempotent)
                self.fin_sent, self.fin_sid = False, None

    def input_pending(self, sid: int) -> bool:
        """Whether subflow ``sid`` holds complete frames not handled yet (``FRAMES_PER_CALL``)."""
        flow = self.subflows.get(sid)
        return flow is not None and flow.decoder.has_frame()

    def decode(self, flow: Subflow, data: bytes) -> tuple[list[Frame], list[Output]]:
        """Frames in ``data`` (``FRAMES_PER_CALL`` at most); a malformed stream resets the subflow."""
        flow.decoder.feed(data)
        frames: list[Frame] = []
        try:
            frames.extend(itertools.islice(flow.decoder.frames(), FRAMES_PER_CALL))
        except FrameError as err:
            return frames, self.reset_subflow(flow, err.reason, str(err))
        return frames, []


@dataclass
class ClientConnection(Endpoint):
    """The client side of one connection over ``paths`` paths (path 0 is the default)."""

    strategy: str = "mptcp-user"
    paths: int = 2
    key_a: int = field(default_factory=crypto.new_key)
    key_b: int | None = None
    initial: int | None = None
    joined_paths: set[int] = field(default_factory=set)
    losers: set[int] = field(default_factory=set)
    awaiting_initial: set[int] = field(default_factory=set)  # paths with a potentially initial attempt
    awaiting_join: dict[int, int] = field(default_factory=dict)  # path -> join attempts opened
    rejoins: dict[int, int] = field(default_factory=dict)  # path -> joins opened after a subflow loss
    order: tuple[int, ...] | None = None  # the order to try paths in (RobE_IPS); default: 0, 1, ...

    def __post_init__(self) -> None:
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"scheduler={self.scheduler!r}: unknown (known: {', '.join(SCHEDULERS)})")
        if self.strategy not in USER_STRATEGIES:
            raise ValueError(f"strategy={self.strategy!r}: unknown (known: {', '.join(USER_STRATEGIES)})")
        if not 1 <= self.paths <= 8:
            raise ValueError(f"paths={self.paths}: must be 1..8")
        if self.order is None:
            self.order = tuple(range(self.paths))
        if sorted(self.order) != list(range(self.paths)):
            raise ValueError(f"order={self.order!r}: must be a permutation of 0..{self.paths - 1}")

    def start(self) -> list[Output]:
        """connect(): the first subflows to open (one path, the first of ``order``, for the single-path
        strategies; every path for the RobE ones)."""
        assert self.order is not None
        paths = list(self.order) if get_strategy(self.strategy).start_all_at_once else [self.order[0]]
        self.awaiting_initial.update(paths)
        return [OpenSubflow(p, initial=True) for p in paths]

    def subflow_connected(self, sid: int, path: int) -> list[Output]:
        """The TCP connection ``sid`` on ``path`` completed its handshake."""
        if self.initial is not None and not self.takes_subflows():
            # Connected after the connection was closed: it would never carry a byte.
            self.awaiting_initial.discard(path)
            return [CloseSubflow(sid, ResetReason.CLOSED)]
        if path in self.awaiting_initial:
            self.awaiting_initial.discard(path)
        elif self.awaiting_join.get(path, 0) > 0 and self.key_b is not None:
            self.awaiting_join[path] -= 1
            flow = Subflow(sid, path, SubflowState.JOIN_SENT, nonce_self=crypto.new_nonce())
            self.subflows[sid] = flow
            return [Transmit(sid, Join(crypto.token(self.key_b), flow.nonce_self, path).encode())]
        if self.initial is None:
            self.initial = sid
            self.subflows[sid] = Subflow(sid, path, SubflowState.READY)
            # The first data rides behind the CAP, as with MP_CAPABLE's third ACK carrying data.
            self.send = SendBuffer(acked_dsn=crypto.idsn(self.key_a), limit=self.send_limit)
            if self.pending_writes:
                self.send.write(bytes(self.pending_writes))
                self.pending_writes.clear()
            first: list[Output] = [Transmit(sid, Cap(VERSION, path, self.key_a).encode()), Established(sid, path),
                                   SubflowReady(sid, path)]  # fmt: skip
            return first + self.pump()
        if self.strategy == "robe-downgrade":
            # Attached as a subsequent subflow, with the proof of Key-B (as soon as it is known).
            self.subflows[sid] = Subflow(sid, path, SubflowState.ATTACH_WAIT)
            return self._attach()
        if self.strategy == "robe-esim":
            # A potentially initial attempt of its own (own Key-A'); recycled once both keys are known.
            flow = Subflow(sid, path, SubflowState.CAP_SENT)
            self.subflows[sid] = flow
            return [Transmit(sid, Cap(VERSION, path, crypto.new_key()).encode())]
        # Break before make: the loser is aborted now (TCP RST) and joins after the CAP_ACK.
        self.losers.add(path)
        out: list[Output] = [CloseSubflow(sid, ResetReason.LOSER)]
        if self.key_b is not None:
            out += self._open_joins()
        return out

    def _open_joins(self) -> list[Output]:
        """After the first data-ack: a join on every path without a subflow (RFC 8684 section 3.2)."""
        used = {f.path for f in self.subflows.values()}
        if self.strategy in ("robe-downgrade", "robe-esim") or not self.takes_subflows():
            return []
        wanted = [p for p in range(self.paths) if p not in used and p not in self.joined_paths]
        if self.strategy == "robe-bbm":
            wanted = [p for p in wanted if p in self.losers]
        self.joined_paths.update(wanted)
        for path in wanted:
            self.awaiting_join[path] = self.awaiting_join.get(path, 0) + 1
        return [OpenSubflow(p) for p in wanted]

    def subflow_closed(self, sid: int) -> list[Output]:
        """The TCP connection ``sid`` ended or its connect failed; its data goes to the others.

        A ready subflow lost while the connection goes on is replaced by a join on its path (as
        the kernel's path manager re-creates subflows), at most ``MAX_REJOINS`` times per path.
        """
        flow = self.subflows.get(sid)
        was_ready = flow is not None and flow.state is SubflowState.READY
        self.drop_subflow(sid)
        out: list[Output] = []
        if (flow is not None and was_ready and self.key_b is not None and self.subflows
                and not self.closing and self.takes_subflows() and self.rejoins.get(flow.path, 0) < MAX_REJOINS
                and flow.path not in {f.path for f in self.subflows.values()}):  # fmt: skip
            self.rejoins[flow.path] = self.rejoins.get(flow.path, 0) + 1
            self.awaiting_join[flow.path] = self.awaiting_join.get(flow.path, 0) + 1
            out.append(OpenSubflow(flow.path))
        return out + self.pump()

    def receive(self, sid: int, data: bytes) -> list[Output]:
        """Bytes arrived on subflow ``sid`` (``FRAMES_PER_CALL`` frames handled: ``input_pending``)."""
        flow = self.subflows.get(sid)
        if flow is None:
            return []
        frames, out = self.decode(flow, data)
        for frame in frames:
            if flow.state is SubflowState.CLOSED:
                break
            out += self._on_frame(flow, frame)
        return out + self.pump()

    def _on_frame(self, flow: Subflow, frame: Frame) -> list[Output]:
        if isinstance(frame, Rst):
            reason = ResetReason(frame.reason)
            self.drop_subflow(flow.sid)
            return [CloseSubflow(flow.sid, None), SubflowFailed(flow.sid, reason, "reset by the server")]
        if isinstance(frame, CapAck):
            return self._on_cap_ack(flow, frame)
        if isinstance(frame, JoinAck) and flow.state is SubflowState.JOIN_SENT:
            assert self.key_b is not None
            if not self.takes_subflows():
                return self.reset_subflow(flow, ResetReason.CLOSED, "JOIN_ACK after the connection was closed")
            expected = crypto.join_ack_hmac(self.key_b, self.key_a, frame.nonce_b, flow.nonce_self)
            if not crypto.verify(expected, frame.hmac_b):
                return self.reset_subflow(flow, ResetReason.BAD_HMAC, "JOIN_ACK HMAC does not verify")
            flow.nonce_peer = frame.nonce_b
            flow.state = SubflowState.JOIN_FIN_SENT
            hmac_a = crypto.join_fin_hmac(self.key_a, self.key_b, flow.nonce_self, frame.nonce_b)
            return [Transmit(flow.sid, JoinFin(hmac_a).encode())]
        if isinstance(frame, DataAck) and flow.state in (SubflowState.READY, SubflowState.JOIN_FIN_SENT):
            # The server acknowledges the data behind the CAP before its CAP_ACK: fine.
            failed = self.on_data_ack(flow, frame.data_ack)
            if failed:
                return failed
            if flow.state is SubflowState.JOIN_FIN_SENT:  # the fourth ACK: the join may carry data
                if not self.takes_subflows():
                    return self.reset_subflow(flow, ResetReason.CLOSED, "joined after the connection was closed")
                flow.state = SubflowState.READY
                return [SubflowReady(flow.sid, flow.path)]
            return []
        if self.recv is None or flow.state is not SubflowState.READY:
            return self.reset_subflow(flow, ResetReason.OUT_OF_STATE, f"{type(frame).__name__} in {flow.state}")
        if isinstance(frame, Data):
            return self.on_data(flow, frame)
        if isinstance(frame, DataFin):
            return self.on_data_fin(flow, frame)
        return self.reset_subflow(flow, ResetReason.OUT_OF_STATE, f"{type(frame).__name__} in {flow.state}")

    def _attach(self) -> list[Output]:
        """Downgrade: every later subflow waiting for Key-B sends CAP_ATTACH and carries data at once."""
        out: list[Output] = []
        if self.key_b is None:
            return out
        if not self.takes_subflows():
            for flow in [f for f in self.subflows.values() if f.state is SubflowState.ATTACH_WAIT]:
                out += self.reset_subflow(flow, ResetReason.CLOSED, "attaching after the connection was closed")
            return out
        for flow in self.subflows.values():
            if flow.state is SubflowState.ATTACH_WAIT:
                proof = crypto.attach_hmac(self.key_a, self.key_b, flow.path)
                flow.state = SubflowState.READY  # the proof precedes any data in the subflow's byte stream
                out += [Transmit(flow.sid, CapAttach(flow.path, self.key_a, proof).encode()),
                        SubflowReady(flow.sid, flow.path)]  # fmt: skip
        return out + (self.pump() if out else [])

    def _recycle(self) -> list[Output]:
        """eSIM: every losing attempt that has its Key-B' joins the connection with JOIN_CAP."""
        out: list[Output] = []
        if self.key_b is None:
            return out
        if not self.takes_subflows():
            for flow in [f for f in self.subflows.values() if f.state is SubflowState.CAP_SENT and f.key_b_prime]:
                out += self.reset_subflow(flow, ResetReason.CLOSED, "recycling after the connection was closed")
            return out
        for flow in self.subflows.values():
            if flow.state is SubflowState.CAP_SENT and flow.key_b_prime is not None:
                proof = crypto.join_cap_hmac(self.key_a, self.key_b, flow.key_b_prime)
                flow.state = SubflowState.READY  # data may follow: the server checks the proof first
                out += [Transmit(flow.sid, JoinCap(flow.path, self.key_a, proof).encode()),
                        SubflowReady(flow.sid, flow.path)]  # fmt: skip
        return out

    def _on_cap_ack(self, flow: Subflow, frame: CapAck) -> list[Output]:
        if flow.state is SubflowState.CAP_SENT and flow.key_b_prime is None:
            flow.key_b_prime = frame.key_b
            return self._recycle()
        if flow.state is not SubflowState.READY or (self.key_b is not None and frame.key_b != self.key_b):
            return self.reset_subflow(flow, ResetReason.OUT_OF_STATE, "unexpected CAP_ACK")
        if self.key_b is not None:
            return self.reset_subflow(flow, ResetReason.OUT_OF_STATE, "second CAP_ACK")
        self.key_b = frame.key_b
        self.recv = Reassembly(next_dsn=crypto.idsn(self.key_b), window=self.window)
        return self.on_data_ack(flow, frame.data_ack) or [*self._open_joins(), *self._recycle(), *self._attach()]


@dataclass
class ServerConnection(Endpoint):
    """The server side of one connection, created by the first CAP of an unknown Key-A."""

    key_a: int = 0
    key_b: int = field(default_factory=crypto.new_key)
    max_subflows: int = 8

    def __post_init__(self) -> None:
        self.start_streams(self.key_b, self.key_a)

    @property
    def token(self) -> int:
        """Our token, which joins name."""
        return crypto.token(self.key_b)


@dataclass
class Server:
    """Server side: classifies every new subflow by its first frame and owns the connections.

    Attributes:
        robe: attach later CAPs of a known Key-A as subsequent subflows (downgrade). Without it the
            server is a classic MPTCP peer and resets them with NO_ROBE.
        max_subflows: per connection (one per declared client path at most).
    """

    robe: bool = True
    max_subflows: int = 8
    window: int = 1 << 20
    scheduler: str = "lowest-rtt"  # of every connection (robe.protocol.sending.SCHEDULERS)
    connections: dict[int, ServerConnection] = field(default_factory=dict)  # by Key-A
    by_token: dict[int, ServerConnection] = field(default_factory=dict)
    owner: dict[int, ServerConnection] = field(default_factory=dict)  # sid -> connection
    unclassified: dict[int, Subflow] = field(default_factory=dict)

    def subflow_accepted(self, sid: int) -> None:
        """A TCP connection was accepted; its first frame will say what it is."""
        self.unclassified[sid] = Subflow(sid, -1, SubflowState.CONNECTING)

    def subflow_closed(self, sid: int) -> list[Output]:
        """The TCP connection ``sid`` ended (EOF, reset or error)."""
        self.unclassified.pop(sid, None)
        conn = self.owner.get(sid)
        if conn is None:
            return []
        conn.drop_subflow(sid)
        return self._release(conn, sid) + conn.pump()

    def abandon(self, conn: ServerConnection) -> list[Output]:
        """The application let go of ``conn`` (``Endpoint.abandon``); subflows it resets are released."""
        before = set(conn.subflows)
        out = conn.abandon()
        for sid in before - set(conn.subflows):
            out += self._release(conn, sid)
        return out

    def _release(self, conn: ServerConnection, sid: int) -> list[Output]:
        """Forget subflow ``sid`` (gone: closed, reset by either side); the connection with its last.

        Every way a subflow ends comes through here, so that no connection (and no token) outlives
        its subflows, whichever end reset the last one and why.
        """
        self.owner.pop(sid, None)
        if conn.subflows or self.connections.get(conn.key_a) is not conn:
            return []
        del self.connections[conn.key_a]
        self.by_token.pop(conn.token, None)
        return [ConnectionReleased(conn.key_a, conn.ended)]

    def input_pending(self, sid: int) -> bool:
        """Whether subflow ``sid`` holds complete frames not handled yet: call ``receive(sid, b"")``."""
        conn = self.owner.get(sid)
        if conn is not None:
            return conn.input_pending(sid)
        flow = self.unclassified.get(sid)
        return flow is not None and flow.decoder.has_frame()

    def receive(self, sid: int, data: bytes) -> tuple[ServerConnection | None, list[Output]]:
        """Bytes on subflow ``sid``: the connection they belong to (if any) and the outputs.

        At most ``FRAMES_PER_CALL`` frames are handled; ``input_pending`` says whether more wait."""
        conn = self.owner.get(sid)
        if conn is None:
            return self._classify(sid, data)
        flow = conn.subflows.get(sid)
        if flow is None:
            return conn, []
        frames, out = conn.decode(flow, data)
        for frame in frames:
            if flow.state is SubflowState.CLOSED:
                break
            out += self._on_frame(conn, flow, frame)
            conn = self.owner.get(sid, conn)  # a JOIN_CAP moves the subflow to another connection
        if flow.state is SubflowState.CLOSED:
            out += self._release(conn, sid)
        return conn, out + conn.pump()

    def _reject(self, flow: Subflow, reason: ResetReason, detail: str) -> list[Output]:
        self.unclassified.pop(flow.sid, None)
        return [Transmit(flow.sid, Rst(reason).encode()), CloseSubflow(flow.sid, reason),
                SubflowFailed(flow.sid, reason, detail)]  # fmt: skip

    def _classify(self, sid: int, data: bytes) -> tuple[ServerConnection | None, list[Output]]:
        flow = self.unclassified.get(sid)
        if flow is None:
            return None, []
        flow.decoder.feed(data)
        try:
            frames = iter(flow.decoder.frames())
            first = next(frames, None)
        except FrameError as err:
            return None, self._reject(flow, err.reason, str(err))
        if first is None:
            return None, []
        if isinstance(first, Cap):
            conn, out = self._on_cap(flow, first)
        elif isinstance(first, CapAttach):
            conn, out = self._on_cap_attach(flow, first)
        elif isinstance(first, Join):
            conn, out = self._on_join(flow, first)
        else:
            return None, self._reject(flow, ResetReason.OUT_OF_STATE, f"{type(first).__name__} before CAP or JOIN")
        if conn is None:
            return None, out
        # Frames behind the first one in the same read (the client's first data behind its CAP).
        created = conn
        try:
            rest = list(itertools.islice(frames, FRAMES_PER_CALL - 1))
        except FrameError as err:
            out += conn.reset_subflow(flow, err.reason, str(err))
            return conn, out + self._release(conn, sid)
        for frame in rest:
            if flow.state is SubflowState.CLOSED:
                break
            out += self._on_frame(conn, flow, frame)
            conn = self.owner.get(sid, conn)  # a JOIN_CAP moves the subflow to another connection
        if flow.state is SubflowState.CLOSED:
            return conn, out + self._release(conn, sid) + conn.pump()
        if isinstance(first, Cap) and flow.state is SubflowState.READY and conn is created:
            assert conn.recv is not None
            # CAP_ACK after the data that came with the CAP, so it acknowledges that data too.
            out.append(Transmit(sid, CapAck(conn.key_b, conn.recv.next_dsn % WRAP).encode()))
        return conn, out + conn.pump()

    def _on_cap(self, flow: Subflow, frame: Cap) -> tuple[ServerConnection | None, list[Output]]:
        if frame.version != VERSION:
            return None, self._reject(flow, ResetReason.MALFORMED, f"CAP version {frame.version}")
        if frame.key_a in self.connections:
            # Attaching needs the proof of Key-B (CAP_ATTACH); a bare CAP could come from a guess.
            reason = ResetReason.NO_ROBE if not self.robe else ResetReason.BAD_HMAC
            return None, self._reject(flow, reason, "CAP of a known Key-A (attaching needs CAP_ATTACH)")
        conn = ServerConnection(window=self.window, key_a=frame.key_a, max_subflows=self.max_subflows,
                                scheduler=self.scheduler)  # fmt: skip
        self.connections[frame.key_a] = conn
        self.by_token[conn.token] = conn
        return conn, [Established(flow.sid, frame.addr_id), *self._adopt(conn, flow, frame.addr_id)]

    def _adopt(self, conn: ServerConnection, flow: Subflow, path: int) -> list[Output]:
        flow.path, flow.state = path, SubflowState.READY
        self.unclassified.pop(flow.sid, None)
        conn.subflows[flow.sid] = flow
        self.owner[flow.sid] = conn
        return [SubflowReady(flow.sid, flow.path)]

    def _on_cap_attach(self, flow: Subflow, frame: CapAttach) -> tuple[ServerConnection | None, list[Output]]:
        """Downgrade: attach a later potentially initial subflow once its HMAC proves Key-B."""
        if not self.robe:
            return None, self._reject(flow, ResetReason.NO_ROBE, "CAP_ATTACH: no RobE here")
        conn = self.connections.get(frame.key_a)
        if conn is None:
            return None, self._reject(flow, ResetReason.UNKNOWN_TOKEN, "CAP_ATTACH for an unknown Key-A")
        if not crypto.verify(crypto.attach_hmac(conn.key_a, conn.key_b, frame.addr_id), frame.hmac):
            return None, self._reject(flow, ResetReason.BAD_HMAC, "CAP_ATTACH HMAC does not verify")
        if not conn.takes_subflows():
            return None, self._reject(flow, ResetReason.CLOSED, "CAP_ATTACH to a closed connection")
        if len(conn.subflows) >= conn.max_subflows or frame.addr_id in {f.path for f in conn.subflows.values()}:
            return None, self._reject(flow, ResetReason.TOO_MANY_SUBFLOWS, f"path {frame.addr_id} already attached")
        return conn, self._adopt(conn, flow, frame.addr_id)

    def _on_join(self, flow: Subflow, frame: Join) -> tuple[ServerConnection | None, list[Output]]:
        conn = self.by_token.get(frame.token_b)
        if conn is None:
            return None, self._reject(flow, ResetReason.UNKNOWN_TOKEN, f"JOIN for unknown token {frame.token_b:#x}")
        if not conn.takes_subflows():
            return None, self._reject(flow, ResetReason.CLOSED, "JOIN to a closed connection")
        if len(conn.subflows) >= conn.max_subflows:
            return None, self._reject(flow, ResetReason.TOO_MANY_SUBFLOWS, "subflow limit reached")
        flow.path, flow.state = frame.addr_id, SubflowState.JOIN_ACK_SENT
        flow.nonce_peer, flow.nonce_self = frame.nonce_a, crypto.new_nonce()
        self.unclassified.pop(flow.sid, None)
        conn.subflows[flow.sid] = flow
        self.owner[flow.sid] = conn
        hmac_b = crypto.join_ack_hmac(conn.key_b, conn.key_a, flow.nonce_self, flow.nonce_peer)
        return conn, [Transmit(flow.sid, JoinAck(hmac_b, flow.nonce_self).encode())]

    def _on_join_cap(self, loser: ServerConnection, flow: Subflow, frame: JoinCap) -> list[Output]:
        """eSIM: move the losing attempt's only subflow into the connection keyed ``frame.key_a``."""
        target = self.connections.get(frame.key_a)
        assert loser.recv is not None
        if target is None or target is loser:
            return loser.reset_subflow(flow, ResetReason.UNKNOWN_TOKEN, "JOIN_CAP for an unknown connection")
        if len(loser.subflows) != 1 or loser.recv.next_dsn != crypto.idsn(loser.key_a):
            return loser.reset_subflow(flow, ResetReason.OUT_OF_STATE, "JOIN_CAP on a connection that carried data")
        if not crypto.verify(crypto.join_cap_hmac(target.key_a, target.key_b, loser.key_b), frame.hmac):
            return loser.reset_subflow(flow, ResetReason.BAD_HMAC, "JOIN_CAP HMAC does not verify")
        if not target.takes_subflows():
            return loser.reset_subflow(flow, ResetReason.CLOSED, "JOIN_CAP to a closed connection")
        if len(target.subflows) >= target.max_subflows or frame.addr_id in {f.path for f in target.subflows.values()}:
            return loser.reset_subflow(flow, ResetReason.TOO_MANY_SUBFLOWS, f"path {frame.addr_id} already attached")
        loser.subflows.pop(flow.sid)
        self.connections.pop(loser.key_a, None)
        self.by_token.pop(loser.token, None)
        flow.path = frame.addr_id
        target.subflows[flow.sid] = flow
        self.owner[flow.sid] = target
        return [Superseded(loser.key_a), SubflowReady(flow.sid, flow.path)]

    def _on_frame(self, conn: ServerConnection, flow: Subflow, frame: Frame) -> list[Output]:
        if isinstance(frame, JoinCap) and flow.state is SubflowState.READY:
            return self._on_join_cap(conn, flow, frame)
        if isinstance(frame, Rst):
            conn.drop_subflow(flow.sid)
            return [CloseSubflow(flow.sid, None), SubflowFailed(flow.sid, ResetReason(frame.reason), "reset by client")]
        if isinstance(frame, JoinFin) and flow.state is SubflowState.JOIN_ACK_SENT:
            expected = crypto.join_fin_hmac(conn.key_a, conn.key_b, flow.nonce_peer, flow.nonce_self)
            if not crypto.verify(expected, frame.hmac_a):
                return conn.reset_subflow(flow, ResetReason.BAD_HMAC, "JOIN_FIN HMAC does not verify")
            if not conn.takes_subflows():
                return conn.reset_subflow(flow, ResetReason.CLOSED, "JOIN_FIN after the connection was closed")
            flow.state = SubflowState.READY
            assert conn.recv is not None
            # The fourth ACK: tells the client this subflow may carry data.
            return [Transmit(flow.sid, DataAck(conn.recv.next_dsn % WRAP, conn.window).encode()),
                    SubflowReady(flow.sid, flow.path)]  # fmt: skip
        if flow.state is not SubflowState.READY:
            return conn.reset_subflow(flow, ResetReason.OUT_OF_STATE, f"{type(frame).__name__} in {flow.state}")
        if isinstance(frame, Data):
            return conn.on_data(flow, frame)
        if isinstance(frame, DataAck):
            return conn.on_data_ack(flow, frame.data_ack)
        if isinstance(frame, DataFin):
            return conn.on_data_fin(flow, frame)
        return conn.reset_subflow(flow, ResetReason.OUT_OF_STATE, f"{type(frame).__name__} on a ready subflow")
