"""Sans-IO decisions of a multi-path connect: which path to attempt when, who wins, whom to reset.

``Race`` is fed what happened (an attempt established or failed, the timer fired) with a
timestamp in nanoseconds and answers with actions for the I/O layer to carry out. It keeps a log
of every event, so the same record comes out of a unit test and of a real connection.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from robe.strategies import Strategy


class Action(enum.StrEnum):
    """What the I/O layer must do."""

    CONNECT = "connect"  # start an attempt on the path
    RESET = "reset"  # abort the attempt on the path (RST if it got that far)
    WIN = "win"  # the path's attempt is the connection: send the request on it
    GIVE_UP = "give_up"  # every attempt failed


@dataclass(frozen=True)
class Step:
    """One action for one path (path is None for GIVE_UP)."""

    action: Action
    path: int | None


@dataclass(frozen=True)
class Event:
    """One logged event: time (ns), what, which path, detail."""

    t_ns: int
    what: str
    path: int | None = None
    detail: str = ""


class AttemptState(enum.StrEnum):
    """State of the attempt on one path."""

    IDLE = "idle"
    CONNECTING = "connecting"
    ESTABLISHED = "established"
    FAILED = "failed"
    RESET = "reset"


@dataclass
class Race:
    """Decisions for one connection over ``path_count`` paths (path 0 is the default path).

    Attributes:
        strategy: the strategy being carried out.
        path_count: number of paths the client may use.
        timer_ns: RobE_TIMER's timer; also the interval between later staggered starts.
        order: the order in which paths are tried (RobE_IPS); default: 0, 1, ... (the default path first).
    """

    strategy: Strategy
    path_count: int
    timer_ns: int
    order: list[int] | None = None
    states: list[AttemptState] = field(init=False)
    events: list[Event] = field(default_factory=list, init=False)
    winner: int | None = field(default=None, init=False)
    timer_due_ns: int | None = field(default=None, init=False)
    finished: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.path_count < 1:
            raise ValueError(f"path_count={self.path_count}: need at least one path")
        if self.timer_ns <= 0:
            raise ValueError(f"timer_ns={self.timer_ns}: must be positive")
        if self.order is None:
            self.order = list(range(self.path_count))
        if sorted(self.order) != list(range(self.path_count)):
            raise ValueError(f"order={self.order!r}: must be a permutation of 0..{self.path_count - 1}")
        self.states = [AttemptState.IDLE] * self.path_count

    def _log(self, now_ns: int, what: str, path: int | None = None, detail: str = "") -> None:
        self.events.append(Event(now_ns, what, path, detail))

    def _connect(self, path: int, now_ns: int) -> Step:
        self.states[path] = AttemptState.CONNECTING
        self._log(now_ns, "attempt", path)
        return Step(Action.CONNECT, path)

    def initial_paths(self) -> list[int]:
        """Paths attempted at connect() (sockets for them can be prepared before the clock starts)."""
        return self._paths_to_start()

    def _paths_to_start(self) -> list[int]:
        assert self.order is not None
        if self.strategy.start_all_at_once:
            return list(self.order)
        return [self.order[0]]

    def _next_idle(self) -> int | None:
        assert self.order is not None
        return next((p for p in self.order if self.states[p] is AttemptState.IDLE), None)

    def _arm_timer(self, now_ns: int) -> None:
        more = AttemptState.IDLE in self.states
        self.timer_due_ns = now_ns + self.timer_ns if self.strategy.staggered and more else None

    def start(self, now_ns: int) -> list[Step]:
        """connect() was called: the first attempts."""
        if self.events:
            raise RuntimeError("race already started")
        self._log(now_ns, "connect_called")
        steps = [self._connect(p, now_ns) for p in self._paths_to_start()]
        self._arm_timer(now_ns)
        return steps

    def on_timer(self, now_ns: int) -> list[Step]:
        """The timer fired: RobE_TIMER starts the next idle path."""
        if self.finished or self.timer_due_ns is None or now_ns < self.timer_due_ns:
            return []
        self._log(now_ns, "timer")
        steps = []
        idle = self._next_idle()
        if idle is not None:
            steps.append(self._connect(idle, now_ns))
        self._arm_timer(now_ns)
        return steps

    def on_established(self, path: int, now_ns: int) -> list[Step]:
        """The attempt on ``path`` completed its handshake."""
        if self.states[path] is not AttemptState.CONNECTING:
            return []
        self.states[path] = AttemptState.ESTABLISHED
        self._log(now_ns, "established", path)
        if self.finished:
            # A late winner: it loses; RST at once so the server drops it.
            self.states[path] = AttemptState.RESET
            self._log(now_ns, "reset", path, "late")
            return [Step(Action.RESET, path)]
        self.finished = True
        self.winner = path
        self.timer_due_ns = None
        self._log(now_ns, "winner", path)
        steps = [Step(Action.WIN, path)]
        for other, state in enumerate(self.states):
            if state is AttemptState.CONNECTING:
                self.states[other] = AttemptState.RESET
                self._log(now_ns, "reset", other, "loser")
                steps.append(Step(Action.RESET, other))
        return steps

    def on_failed(self, path: int, now_ns: int, reason: str) -> list[Step]:
        """The attempt on ``path`` failed (the kernel gave up, or the network refused)."""
        if self.states[path] is not AttemptState.CONNECTING:
            return []
        self.states[path] = AttemptState.FAILED
        self._log(now_ns, "failed", path, reason)
        if self.finished:
            return []
        steps: list[Step] = []
        if AttemptState.CONNECTING not in self.states:
            idle = self._next_idle()
            if self.strategy.staggered and idle is not None:
                # Nothing left in flight: start the next path now rather than wait for the timer.
                steps.append(self._connect(idle, now_ns))
                self._arm_timer(now_ns)
            else:
                self.finished = True
                self.timer_due_ns = None
                self._log(now_ns, "gave_up")
                steps.append(Step(Action.GIVE_UP, None))
        return steps
