"""How busy the machine's CPUs were over an interval, from ``/proc/stat`` (all CPUs together).

``cpu_sample()`` reads the aggregate ``cpu`` line; ``idle_share(before, after)`` is the fraction of
CPU time spent idle (idle + iowait) between two samples. Experiment 2 keeps it per load: a browser
that saturates the two cores is measuring its own processing, not the network.
"""

from __future__ import annotations

from pathlib import Path

PROC_STAT = Path("/proc/stat")


def parse_cpu_line(line: str) -> tuple[int, int]:
    """(idle ticks, total ticks) of a ``cpu ...`` line of /proc/stat (guest time is in user already)."""
    fields = line.split()
    if not fields or not fields[0].startswith("cpu") or len(fields) < 5:
        raise ValueError(f"not a /proc/stat cpu line: {line!r}")
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return values[3] + values[4], sum(values)


def cpu_sample(path: Path = PROC_STAT) -> tuple[int, int]:
    """(idle, total) ticks of all CPUs now."""
    with path.open() as handle:
        return parse_cpu_line(handle.readline())


def idle_share(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """Fraction of CPU time idle between two samples (None when no tick passed)."""
    total = after[1] - before[1]
    return None if total <= 0 else (after[0] - before[0]) / total
