"""RobE_IPS's history: which path to try first, from what earlier connections showed (sans-IO).

draft-amend-tcpm-mptcp-robe-02 §2.3 leaves the "Initial Path Selection" module to the implementer:
it SHOULD use at least one of signal strength, throughput, RTT and link success rate, compare
*filtered* RTTs rather than the latest sample, and use the default path when there is no history.
``PathHistory`` is that module. It is fed times (seconds on any monotonic clock) and never reads a
clock, a socket or a file; the endpoints feed it and ask it for an order.

Inputs, per destination key (``destination_key``: the server address's /24 by default, so that
servers behind one prefix share a history, as the draft's "domain/location" level suggests):

* ``attempt_started(key, path, now)`` -> a handle; ``attempt_established(handle, now, retransmitted)``
  (the handshake time is an RTT sample unless the SYN was retransmitted: Karn's rule),
  ``attempt_failed(handle, now)`` (the kernel gave up or the network refused), ``attempt_dropped(handle,
  now, overtaken)`` (the client reset the attempt: a loser; evidence against its path only when an
  attempt started *later* won, as when RobE_TIMER's timer moved the connection to another path);
* ``rtt_sample(key, path, rtt_s, now)``: the RTT of a subflow the kernel reports (its minimum RTT,
  ``tcpi_min_rtt``: a smoothed RTT read at the end of a download holds the queue it built);
  a subflow on a path is also proof that the path works, so it clears a failure (this is how a
  path manager's MP_JOIN on a path that came back lets IPS return to it without a probe).

Output: ``order(key, paths, now)``, the paths (given in default order, default path first) in the
order the next connection should try them.

Rules (each stated, each unit tested):

* **Filtering**: per path an exponentially weighted moving average of the samples with gain
  ``rtt_gain`` (1/8, RFC 6298's SRTT gain); the first sample sets it.
* **RTT ageing**: an estimate without a new sample for ``rtt_max_age_s`` (600 s) is forgotten.
* **Failure**: an attempt that failed, one overtaken by an attempt started later on another path,
  *or one still unanswered ``syn_timeout_s`` after it started*
  (1 s, Linux's initial SYN timeout, when the kernel retransmits the SYN), marks its path *suspect*
  (the pending attempt is judged lazily whenever ``order`` is asked, so a history shared by
  concurrent connections learns of a dead path one initial RTO after the first SYN went into it).
* **Failure ageing**: a suspect path is tried again ``failure_hold_s`` (30 s) after the failure, the
  hold doubling with every further failure of an attempt started after the previous failure (at
  most ``failure_hold_max_s``, 600 s); attempts already in flight when a failure was recorded do
  not extend it. Any success on the path (an established attempt, a subflow sample) clears it.
* **Order**: paths that are not suspect before suspect ones; among them, paths with an RTT estimate
  before paths without one (no history -> default order, i.e. the default path); among those with
  an estimate, the lowest filtered RTT first, where every path within ``tie_tolerance`` of the best
  (max of 1 ms and 10 %) counts as a tie and ties keep the default order (so the default path is
  kept unless another path is clearly faster); suspect paths by when their hold ends.
* **Bounded**: at most ``max_destinations`` keys (least recently used evicted) and
  ``max_paths_per_destination`` paths per key (least recently updated evicted), and at most
  ``max_pending`` unanswered attempts per key (the oldest are judged and dropped first).
* **A path that disappears**: ``order`` only ever returns paths it is given; a path's history is
  kept (bounded as above) in case it comes back.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

DEFAULT_PREFIX_LEN = 24


class HistoryError(ValueError):
    """A bad setting or input; the message names the field and value."""


def destination_key(address: str, prefix_len: int = DEFAULT_PREFIX_LEN) -> str:
    """The history key of a server address: its network of ``prefix_len`` bits (``198.18.3.0/24``)."""
    try:
        network = ipaddress.ip_network(f"{address}/{prefix_len}", strict=False)
    except ValueError:
        raise HistoryError(f"address={address!r} prefix_len={prefix_len!r}: not an IP address and prefix") from None
    return str(network)


@dataclass(frozen=True)
class HistoryConfig:
    """The selector's parameters (see the module docstring for what each means)."""

    rtt_gain: float = 0.125
    rtt_max_age_s: float = 600.0
    syn_timeout_s: float = 1.0
    failure_hold_s: float = 30.0
    failure_hold_max_s: float = 600.0
    tie_tolerance_s: float = 0.001
    tie_tolerance_ratio: float = 0.10
    max_destinations: int = 256
    max_paths_per_destination: int = 8
    max_pending: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.rtt_gain <= 1:
            raise HistoryError(f"rtt_gain={self.rtt_gain!r}: must be within (0, 1]")
        for name in ("rtt_max_age_s", "syn_timeout_s", "failure_hold_s", "failure_hold_max_s"):
            if not getattr(self, name) > 0:
                raise HistoryError(f"{name}={getattr(self, name)!r}: must be > 0")
        if self.failure_hold_max_s < self.failure_hold_s:
            raise HistoryError(f"failure_hold_max_s={self.failure_hold_max_s!r}: must be >= failure_hold_s")
        if self.tie_tolerance_s < 0 or self.tie_tolerance_ratio < 0:
            raise HistoryError("tie_tolerance_s, tie_tolerance_ratio: must be >= 0")
        for name in ("max_destinations", "max_paths_per_destination", "max_pending"):
            if getattr(self, name) < 1:
                raise HistoryError(f"{name}={getattr(self, name)!r}: must be >= 1")


@dataclass
class PathState:
    """What is known about one path to one destination."""

    srtt_s: float | None = None
    rtt_at: float | None = None  # time of the last RTT sample
    failures: int = 0  # consecutive failures (reset by a success)
    failed_at: float | None = None  # time of the last failure that counted
    suspect_until: float | None = None
    updated_at: float = 0.0

    def estimate(self, now: float, max_age_s: float) -> float | None:
        """The filtered RTT, or None when there is none or it is older than ``max_age_s``."""
        if self.srtt_s is None or self.rtt_at is None or now - self.rtt_at > max_age_s:
            return None
        return self.srtt_s

    def suspect(self, now: float) -> bool:
        """Marked failed and still within the hold."""
        return self.suspect_until is not None and now < self.suspect_until


@dataclass(frozen=True)
class Attempt:
    """Handle of one attempt in flight (returned by ``attempt_started``)."""

    key: str
    path: str
    started_at: float
    serial: int


@dataclass
class _Destination:
    paths: OrderedDict[str, PathState] = field(default_factory=OrderedDict)
    pending: OrderedDict[int, tuple[Attempt, bool]] = field(default_factory=OrderedDict)  # serial -> (attempt, judged)


class PathHistory:
    """Per-destination path history and the order of paths for the next connect (thread-safe)."""

    def __init__(self, config: HistoryConfig | None = None) -> None:
        self.config = config or HistoryConfig()
        self._destinations: OrderedDict[str, _Destination] = OrderedDict()
        self._serial = 0
        self._lock = threading.Lock()

    # -- bookkeeping -------------------------------------------------------------------------

    def _destination(self, key: str) -> _Destination:
        dest = self._destinations.get(key)
        if dest is None:
            dest = self._destinations[key] = _Destination()
            while len(self._destinations) > self.config.max_destinations:
                self._destinations.popitem(last=False)
        self._destinations.move_to_end(key)
        return dest

    def _path(self, dest: _Destination, path: str, now: float) -> PathState:
        state = dest.paths.get(path)
        if state is None:
            state = dest.paths[path] = PathState()
            while len(dest.paths) > self.config.max_paths_per_destination:
                dest.paths.popitem(last=False)
        state.updated_at = now
        dest.paths.move_to_end(path)
        return state

    def _fail(self, dest: _Destination, attempt: Attempt, at: float) -> None:
        state = self._path(dest, attempt.path, at)
        if state.failed_at is not None and attempt.started_at < state.failed_at and state.suspect(at):
            return  # in flight before the failure we already know of: no new evidence
        state.failures += 1
        state.failed_at = at
        hold = min(self.config.failure_hold_s * 2 ** (state.failures - 1), self.config.failure_hold_max_s)
        state.suspect_until = at + hold

    def _succeed(self, dest: _Destination, path: str, now: float) -> PathState:
        state = self._path(dest, path, now)
        state.failures = 0
        state.failed_at = None
        state.suspect_until = None
        return state

    def _sample(self, state: PathState, rtt_s: float, now: float) -> None:
        if state.estimate(now, self.config.rtt_max_age_s) is None or state.srtt_s is None:
            state.srtt_s = rtt_s
        else:
            state.srtt_s += self.config.rtt_gain * (rtt_s - state.srtt_s)
        state.rtt_at = now

    def _judge_pending(self, dest: _Destination, now: float) -> None:
        """Unanswered attempts older than the SYN timeout count as failures (once each)."""
        for serial, (attempt, judged) in list(dest.pending.items()):
            due = attempt.started_at + self.config.syn_timeout_s
            if not judged and now >= due:
                dest.pending[serial] = (attempt, True)
                self._fail(dest, attempt, due)

    # -- inputs ------------------------------------------------------------------------------

    def attempt_started(self, key: str, path: str, now: float) -> Attempt:
        """An attempt on ``path`` to ``key`` sent its first SYN at ``now``."""
        with self._lock:
            dest = self._destination(key)
            self._serial += 1
            attempt = Attempt(key, path, now, self._serial)
            dest.pending[attempt.serial] = (attempt, False)
            while len(dest.pending) > self.config.max_pending:
                oldest, (old, judged) = next(iter(dest.pending.items()))
                if not judged:
                    self._fail(dest, old, max(now, old.started_at + self.config.syn_timeout_s))
                del dest.pending[oldest]
            return attempt

    def _finish(self, attempt: Attempt) -> _Destination | None:
        dest = self._destinations.get(attempt.key)
        if dest is not None:
            dest.pending.pop(attempt.serial, None)
        return dest

    def attempt_established(self, attempt: Attempt, now: float, retransmitted: bool) -> None:
        """The attempt completed its handshake at ``now``; its duration is an RTT sample unless the
        SYN (or SYN/ACK) was retransmitted."""
        if now < attempt.started_at:
            raise HistoryError(f"now={now!r}: before the attempt started ({attempt.started_at!r})")
        with self._lock:
            dest = self._finish(attempt) or self._destination(attempt.key)
            state = self._succeed(dest, attempt.path, now)
            if not retransmitted:
                self._sample(state, now - attempt.started_at, now)

    def attempt_failed(self, attempt: Attempt, now: float) -> None:
        """The attempt failed (the kernel gave up, or the network refused it)."""
        with self._lock:
            dest = self._finish(attempt) or self._destination(attempt.key)
            self._judge_pending(dest, now)  # an unanswered attempt may already have counted ...
            self._fail(dest, attempt, now)  # ... then this adds nothing (it started before)

    def attempt_dropped(self, attempt: Attempt, now: float, overtaken: bool = False) -> None:
        """The client gave the attempt up (reset a loser): judged as any pending attempt, then forgotten;
        ``overtaken``: an attempt started later on another path won, which counts as a failure of this one."""
        with self._lock:
            dest = self._destinations.get(attempt.key)
            if dest is None:
                return
            self._judge_pending(dest, now)
            if overtaken:
                self._fail(dest, attempt, now)
            dest.pending.pop(attempt.serial, None)

    def rtt_sample(self, key: str, path: str, rtt_s: float, now: float) -> None:
        """A subflow on ``path`` to ``key`` works and its path has RTT ``rtt_s`` (the subflow's minimum RTT)."""
        if not rtt_s > 0:
            raise HistoryError(f"rtt_s={rtt_s!r}: must be > 0")
        with self._lock:
            dest = self._destination(key)
            self._sample(self._succeed(dest, path, now), rtt_s, now)

    # -- output ------------------------------------------------------------------------------

    def order(self, key: str, paths: Sequence[str], now: float) -> list[str]:
        """``paths`` (default path first) in the order the next connection to ``key`` should try them."""
        if len(set(paths)) != len(paths):
            raise HistoryError(f"paths={list(paths)!r}: duplicates")
        with self._lock:
            dest = self._destinations.get(key)
            if dest is None:
                return list(paths)
            self._judge_pending(dest, now)
            states = {p: dest.paths.get(p) or PathState() for p in paths}
            max_age = self.config.rtt_max_age_s
            good = [p for p in paths if not states[p].suspect(now)]
            suspect = sorted((p for p in paths if states[p].suspect(now)),
                             key=lambda p: (states[p].suspect_until, paths.index(p)))  # fmt: skip
            known = [(states[p].estimate(now, max_age), p) for p in good]
            measured = [(rtt, p) for rtt, p in known if rtt is not None]
            unmeasured = [p for rtt, p in known if rtt is None]
            if not measured:
                return unmeasured + suspect
            best = min(rtt for rtt, _ in measured)
            tolerance = max(self.config.tie_tolerance_s, self.config.tie_tolerance_ratio * best)
            tied = [p for rtt, p in measured if rtt <= best + tolerance]  # default order kept
            slower = sorted((rtt, paths.index(p), p) for rtt, p in measured if rtt > best + tolerance)
            rest = [p for _, _, p in slower]
            return tied + rest + unmeasured + suspect

    def has_history(self, key: str, paths: Sequence[str], now: float) -> bool:
        """Whether any of ``paths`` has a current RTT estimate or failure for ``key`` (RobE_IPS+SIM
        uses SIM until it has)."""
        with self._lock:
            dest = self._destinations.get(key)
            if dest is None:
                return False
            self._judge_pending(dest, now)
            for path in paths:
                state = dest.paths.get(path)
                if state is not None and (state.estimate(now, self.config.rtt_max_age_s) is not None
                                          or state.suspect(now)):  # fmt: skip
                    return True
            return False

    def snapshot(self, key: str, now: float) -> dict[str, dict[str, float | int | bool | None]]:
        """What the history holds for ``key`` (for logs): per path the estimate, failures, suspicion."""
        with self._lock:
            dest = self._destinations.get(key)
            if dest is None:
                return {}
            self._judge_pending(dest, now)
            return {
                path: {
                    "srtt_ms": None if (e := s.estimate(now, self.config.rtt_max_age_s)) is None else round(e * 1e3, 3),
                    "failures": s.failures,
                    "suspect": s.suspect(now),
                }
                for path, s in dest.paths.items()
            }

    def size(self) -> tuple[int, int, int]:
        """(destinations, paths, pending attempts) held: the memory bound's test hook."""
        with self._lock:
            dests = list(self._destinations.values())
            return len(dests), sum(len(d.paths) for d in dests), sum(len(d.pending) for d in dests)
