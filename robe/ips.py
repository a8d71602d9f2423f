"""RobE_IPS's history: which path to try first, from what earlier connections showed (sans-IO).

draft-amend-tcpm-mptcp-robe-02 §2.3 leaves the "Initial Path Selection" module to the implementer:
it SHOULD use at least one of signal strength, throughput, RTT and link success rate, compare
*filtered* RTTs rather than the latest sample, and use the default path when there is no history.
``PathHistory`` is that module. It is fed times (seconds on any monotonic clock) and never reads a
clock, a socket or a file; the endpoints feed it and ask it for an order.

Inputs, per destination key (``destination_key``: the server address's /24 by default, so that
servers behind one prefix share a history, as the draft's "domain/location" level suggests):

* ``attempt_started(key, path, now)`` -> a handle; ``attempt_established(handle, now, retransmitted)``
  (``retransmitted``: how many times the SYN was retransmitted, ``True`` counting as one; the
  handshake time is an RTT sample only without retransmission: Karn's rule),
  ``attempt_failed(handle, now)`` (the kernel gave up or the network refused), ``attempt_dropped(handle,
  now, overtaken)`` (the client reset the attempt: a loser; evidence against its path only when an
  attempt started *later* won, as when RobE_TIMER's timer moved the connection to another path);
* ``rtt_sample(key, path, rtt_s, now, retransmits)``: the RTT of a subflow the kernel reports (its
  minimum RTT, ``tcpi_min_rtt``: a smoothed RTT read at the end of a download holds the queue it
  built); a subflow on a path is also proof that the path works, so it clears a failure (this is
  how a path manager's MP_JOIN on a path that came back lets IPS return to it without a probe).
  With ``retransmits`` (the subflow's retransmissions, its MP_JOIN SYN's included) it is also a
  set-up outcome of its path (a join the path manager opened; the driver passes it for subflows on
  paths the connection did not attempt itself, so no handshake counts twice).

Output: ``order(key, paths, now)``, the paths (given in default order, default path first) in the
order the next connection should try them.

Rules (each stated, each unit tested):

* **Filtering**: per path an exponentially weighted moving average of the samples with gain
  ``rtt_gain`` (1/8, RFC 6298's SRTT gain); the first sample sets it.
* **RTT ageing**: an estimate without a new sample for ``rtt_max_age_s`` (600 s) is forgotten.
* **Set-up success rate** (the drafts' "link success rate"): every finished attempt is an outcome
  of its path: 1 for a handshake without retransmission, ``1 / (1 + n)`` for one that needed ``n``
  SYN retransmissions (a partial failure: with loss ``p`` on the SYN's way the expected outcome
  falls with ``p``), 0 for an attempt that failed, was unanswered at the SYN timeout (judged once,
  lazily, as below) or was overtaken; a join's outcome counts the same way. The rate is the mean of
  the outcomes, each weighted ``2 ** (-age / success_half_life_s)`` (half-life 120 s: an outcome
  two minutes old counts half as much as a new one), pulled towards 1 by a prior of weight
  ``success_prior_weight`` (0.5): ``(sum of weighted outcomes + 0.5) / (sum of weights + 0.5)``.
  A path without outcomes has no rate, and the order treats it as reliable (rate 1), so an untried
  path is tried before one known to be lossy; as evidence decays the prior takes over, so a path
  judged lossy and never tried again is tried again after about four half-lives (one failure:
  rate 0.33 at once, 0.9 after 8.3 minutes).
* **Failure**: an attempt that failed, one overtaken by an attempt started later on another path,
  *or one still unanswered ``syn_timeout_s`` after it started*
  (1 s, Linux's initial SYN timeout, when the kernel retransmits the SYN), marks its path *suspect*
  (the pending attempt is judged lazily whenever ``order`` is asked, so a history shared by
  concurrent connections learns of a dead path one initial RTO after the first SYN went into it).
* **Failure ageing**: a suspect path is tried again ``failure_hold_s`` (30 s) after the last evidence
  that it is dead, the hold doubling with every further failure of an attempt started after the
  previous failure (at most ``failure_hold_max_s``, 600 s); attempts already in flight when a failure
  was recorded do not double it. The last evidence is the failure, or, later, the end of an attempt
  that was never answered: an attempt still unanswered after the SYN timeout keeps its path suspect
  for as long as it stays unanswered (its SYNs keep going into the path without answer), and when it
  ends without an answer (the kernel gave up, or the client dropped it: a browser or wget that gave up
  after 30 s) the hold counts from then. Without this a client that waits out one dead attempt longer
  than the hold (wget's 30 s read timeout against a 30 s hold) would send the next connection into
  the same dead path. Any success on the path (an established attempt, a subflow sample) clears it,
  and attempts started before that success no longer count.
* **Order** (success first, then RTT): paths that are not suspect before suspect ones; among those,
  the *reliable* ones, whose rate is within ``rate_tolerance`` (0.1) of the best rate, before the
  lossy ones (highest rate first, ties in default order); among the reliable ones, paths with an RTT
  estimate before paths without one (no history -> default order, i.e. the default path); among
  those with an estimate, the lowest filtered RTT first, where every path within ``tie_tolerance``
  of the best (max of 1 ms and 10 %) counts as a tie and ties keep the default order (so the default
  path is kept unless another path is clearly faster); suspect paths by when their hold ends.
  So a lossy default path loses to an equally fast clean one, and RTT decides among paths that
  set up equally well.
* **Trusted** (``trusted``, RobE_IPS+SIM's switch): the first path of the order is trusted when it
  is not suspect, has an outcome newer than ``rtt_max_age_s`` and a rate of at least
  ``1 - rate_tolerance``.
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
    success_half_life_s: float = 120.0
    success_prior_weight: float = 0.5
    rate_tolerance: float = 0.10
    max_destinations: int = 256
    max_paths_per_destination: int = 8
    max_pending: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.rtt_gain <= 1:
            raise HistoryError(f"rtt_gain={self.rtt_gain!r}: must be within (0, 1]")
        for name in ("rtt_max_age_s", "syn_timeout_s", "failure_hold_s", "failure_hold_max_s", "success_half_life_s"):
            if not getattr(self, name) > 0:
                raise HistoryError(f"{name}={getattr(self, name)!r}: must be > 0")
        if self.failure_hold_max_s < self.failure_hold_s:
            raise HistoryError(f"failure_hold_max_s={self.failure_hold_max_s!r}: must be >= failure_hold_s")
        if self.tie_tolerance_s < 0 or self.tie_tolerance_ratio < 0:
            raise HistoryError("tie_tolerance_s, tie_tolerance_ratio: must be >= 0")
        if not self.success_prior_weight > 0:
            raise HistoryError(f"success_prior_weight={self.success_prior_weight!r}: must be > 0")
        if not 0 <= self.rate_tolerance < 1:
            raise HistoryError(f"rate_tolerance={self.rate_tolerance!r}: must be within [0, 1)")
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
    succeeded_at: float | None = None  # time of the last success (older unanswered attempts stop counting)
    updated_at: float = 0.0
    outcome_sum: float = 0.0  # weighted sum of set-up outcomes, weights as of ``outcome_at``
    outcome_weight: float = 0.0  # sum of their weights
    outcome_at: float | None = None  # time of the newest outcome

    def add_outcome(self, value: float, now: float, half_life_s: float) -> None:
        """One set-up outcome (0 failed ... 1 clean handshake) at ``now``; older ones decay."""
        if self.outcome_at is not None:
            # An outcome reported late (its attempt started earlier) decays nothing newer.
            decay: float = 2.0 ** (-max(0.0, now - self.outcome_at) / half_life_s)
            self.outcome_sum *= decay
            self.outcome_weight *= decay
        self.outcome_sum += value
        self.outcome_weight += 1.0
        self.outcome_at = now if self.outcome_at is None else max(now, self.outcome_at)

    def rate(self, now: float, half_life_s: float, prior_weight: float) -> float | None:
        """The filtered set-up success rate (None without any outcome): the outcomes' mean, each weighted
        by its age's decay, pulled towards 1 with ``prior_weight``."""
        if self.outcome_at is None:
            return None
        decay: float = 2.0 ** (-max(0.0, now - self.outcome_at) / half_life_s)
        return (self.outcome_sum * decay + prior_weight) / (self.outcome_weight * decay + prior_weight)

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
        state.succeeded_at = now if state.succeeded_at is None else max(now, state.succeeded_at)
        return state

    def _hold(self, state: PathState) -> float:
        doubled = self.config.failure_hold_s * 2 ** (max(state.failures, 1) - 1)
        return float(min(doubled, self.config.failure_hold_max_s))

    def _newer_than_success(self, state: PathState, attempt: Attempt) -> bool:
        return state.succeeded_at is None or attempt.started_at >= state.succeeded_at

    def _ended_unanswered(self, dest: _Destination, attempt: Attempt, now: float) -> None:
        """An attempt ended without an answer at ``now``: its path's hold counts from now (if later)."""
        state = dest.paths.get(attempt.path)
        if state is None or not self._newer_than_success(state, attempt):
            return  # the path worked after this attempt started: newer evidence
        state.suspect_until = max(state.suspect_until or now, now + self._hold(state))

    def _suspect_until(self, dest: _Destination, path: str, now: float) -> float | None:
        """When ``path``'s suspicion ends (None: not suspect); a path with an attempt unanswered past the
        SYN timeout stays suspect at least a hold beyond now, as the attempt may end unanswered now."""
        state = dest.paths.get(path)
        if state is None:
            return None
        if any(judged and attempt.path == path and self._newer_than_success(state, attempt)
               for attempt, judged in dest.pending.values()):  # fmt: skip
            return max(state.suspect_until or now, now + self._hold(state))
        return state.suspect_until if state.suspect(now) else None

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

    def _outcome(self, dest: _Destination, path: str, value: float, now: float) -> None:
        self._path(dest, path, now).add_outcome(value, now, self.config.success_half_life_s)

    def attempt_started(self, key: str, path: str, now: float) -> Attempt:
        """An attempt on ``path`` to ``key`` sent its first SYN at ``now``."""
        with self._lock:
            dest = self._destination(key)
            self._serial += 1
            attempt = Attempt(key, path, now, self._serial)
            dest.pending[attempt.serial] = (attempt, False)
            while len(dest.pending) > self.config.max_pending:
                oldest, (old, judged) = next(iter(dest.pending.items()))
                at = max(now, old.started_at + self.config.syn_timeout_s)
                if not judged:
                    self._fail(dest, old, at)
                self._outcome(dest, old.path, 0.0, at)  # never answered as far as we know
                del dest.pending[oldest]
            return attempt

    def _finish(self, attempt: Attempt) -> _Destination | None:
        dest = self._destinations.get(attempt.key)
        if dest is not None:
            dest.pending.pop(attempt.serial, None)
        return dest

    def attempt_established(self, attempt: Attempt, now: float, retransmitted: int) -> None:
        """The attempt completed its handshake at ``now`` after ``retransmitted`` SYN retransmissions
        (``True`` counts as one): an outcome of ``1 / (1 + retransmitted)``, and its duration an RTT
        sample unless the SYN (or SYN/ACK) was retransmitted."""
        if now < attempt.started_at:
            raise HistoryError(f"now={now!r}: before the attempt started ({attempt.started_at!r})")
        if retransmitted < 0:
            raise HistoryError(f"retransmitted={retransmitted!r}: must be >= 0")
        with self._lock:
            dest = self._finish(attempt) or self._destination(attempt.key)
            state = self._succeed(dest, attempt.path, now)
            state.add_outcome(1.0 / (1 + int(retransmitted)), now, self.config.success_half_life_s)
            if not retransmitted:
                self._sample(state, now - attempt.started_at, now)

    def attempt_failed(self, attempt: Attempt, now: float) -> None:
        """The attempt failed (the kernel gave up, or the network refused it): an outcome of 0."""
        with self._lock:
            dest = self._finish(attempt) or self._destination(attempt.key)
            self._judge_pending(dest, now)  # an unanswered attempt may already have counted ...
            self._fail(dest, attempt, now)  # ... then this adds no failure (it started before) ...
            self._ended_unanswered(dest, attempt, now)  # ... but its hold counts from now
            self._outcome(dest, attempt.path, 0.0, now)

    def attempt_dropped(self, attempt: Attempt, now: float, overtaken: bool = False) -> None:
        """The client gave the attempt up (reset a loser): judged as any pending attempt, then forgotten;
        ``overtaken``: an attempt started later on another path won, which counts as a failure of this one.
        An outcome of 0 when overtaken or unanswered for the SYN timeout; otherwise none (SIM's loser
        that was merely slower says nothing about its path's success)."""
        with self._lock:
            dest = self._destinations.get(attempt.key)
            if dest is None:
                return
            self._judge_pending(dest, now)
            if overtaken:
                self._fail(dest, attempt, now)
            entry = dest.pending.pop(attempt.serial, None)
            if overtaken or (entry is not None and entry[1]):
                self._ended_unanswered(dest, attempt, now)
                self._outcome(dest, attempt.path, 0.0, now)

    def rtt_sample(self, key: str, path: str, rtt_s: float, now: float, retransmits: int | None = None) -> None:
        """A subflow on ``path`` to ``key`` works and its path has RTT ``rtt_s`` (the subflow's minimum RTT);
        with ``retransmits`` (the subflow's retransmissions so far) also a set-up outcome of the path
        (a join: ``1 / (1 + retransmits)``)."""
        if not rtt_s > 0:
            raise HistoryError(f"rtt_s={rtt_s!r}: must be > 0")
        if retransmits is not None and retransmits < 0:
            raise HistoryError(f"retransmits={retransmits!r}: must be >= 0")
        with self._lock:
            dest = self._destination(key)
            state = self._succeed(dest, path, now)
            self._sample(state, rtt_s, now)
            if retransmits is not None:
                state.add_outcome(1.0 / (1 + retransmits), now, self.config.success_half_life_s)

    # -- output ------------------------------------------------------------------------------

    def _rate(self, state: PathState, now: float) -> float | None:
        return state.rate(now, self.config.success_half_life_s, self.config.success_prior_weight)

    def _rank(self, dest: _Destination, paths: Sequence[str], now: float) -> list[str]:
        states = {p: dest.paths.get(p) or PathState() for p in paths}
        max_age = self.config.rtt_max_age_s
        until = {p: self._suspect_until(dest, p, now) for p in paths}
        good = [p for p in paths if until[p] is None]
        suspect = sorted((p for p in paths if until[p] is not None),
                         key=lambda p: (until[p], paths.index(p)))  # fmt: skip
        rates = {p: self._rate(states[p], now) for p in good}
        presumed = {p: 1.0 if rate is None else rate for p, rate in rates.items()}  # untried: presumed reliable
        best_rate = max(presumed.values(), default=1.0)
        reliable = [p for p in good if presumed[p] >= best_rate - self.config.rate_tolerance - 1e-12]
        lossy = sorted((p for p in good if p not in reliable), key=lambda p: (-presumed[p], paths.index(p)))
        known = [(states[p].estimate(now, max_age), p) for p in reliable]
        measured = [(rtt, p) for rtt, p in known if rtt is not None]
        unmeasured = [p for rtt, p in known if rtt is None]
        if not measured:
            return unmeasured + lossy + suspect
        best = min(rtt for rtt, _ in measured)
        tolerance = max(self.config.tie_tolerance_s, self.config.tie_tolerance_ratio * best)
        tied = [p for rtt, p in measured if rtt <= best + tolerance]  # default order kept
        slower = sorted((rtt, paths.index(p), p) for rtt, p in measured if rtt > best + tolerance)
        rest = [p for _, _, p in slower]
        return tied + rest + unmeasured + lossy + suspect

    def order(self, key: str, paths: Sequence[str], now: float) -> list[str]:
        """``paths`` (default path first) in the order the next connection to ``key`` should try them."""
        if len(set(paths)) != len(paths):
            raise HistoryError(f"paths={list(paths)!r}: duplicates")
        with self._lock:
            dest = self._destinations.get(key)
            if dest is None:
                return list(paths)
            self._judge_pending(dest, now)
            return self._rank(dest, paths, now)

    def trusted(self, key: str, paths: Sequence[str], now: float) -> str | None:
        """The first path of the order when the history trusts it (not suspect, a success rate of at least
        ``1 - rate_tolerance`` from at least one outcome), else None: RobE_IPS+SIM races every path
        (SIM) until then."""
        if len(set(paths)) != len(paths):
            raise HistoryError(f"paths={list(paths)!r}: duplicates")
        with self._lock:
            dest = self._destinations.get(key)
            if dest is None or not paths:
                return None
            self._judge_pending(dest, now)
            first = self._rank(dest, paths, now)[0]
            state = dest.paths.get(first)
            if state is None or self._suspect_until(dest, first, now) is not None:
                return None
            rate = self._rate(state, now)
            recent = state.outcome_at is not None and now - state.outcome_at <= self.config.rtt_max_age_s
            return first if recent and rate is not None and rate >= 1 - self.config.rate_tolerance - 1e-12 else None

    def has_history(self, key: str, paths: Sequence[str], now: float) -> bool:
        """Whether any of ``paths`` has a current RTT estimate, failure, or set-up outcome (newer than
        ``rtt_max_age_s``) for ``key``."""
        with self._lock:
            dest = self._destinations.get(key)
            if dest is None:
                return False
            self._judge_pending(dest, now)
            max_age = self.config.rtt_max_age_s
            for path in paths:
                state = dest.paths.get(path)
                if state is not None and (state.estimate(now, max_age) is not None
                                          or self._suspect_until(dest, path, now) is not None
                                          or (state.outcome_at is not None
                                              and now - state.outcome_at <= max_age)):  # fmt: skip
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
                    "suspect": self._suspect_until(dest, path, now) is not None,
                    "success_rate": None if (r := self._rate(s, now)) is None else round(r, 3),
                }
                for path, s in dest.paths.items()
            }

    def size(self) -> tuple[int, int, int]:
        """(destinations, paths, pending attempts) held: the memory bound's test hook."""
        with self._lock:
            dests = list(self._destinations.values())
            return len(dests), sum(len(d.paths) for d in dests), sum(len(d.pending) for d in dests)
