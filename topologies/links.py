"""One link API, two backends: kernel netem where it really works, our userspace TAP wire elsewhere.

Mininet's ``TCLink`` prints an error and runs the link *unemulated* when ``sch_netem`` is missing,
so the backend is chosen by a real probe (``tc qdisc add ... netem`` on a scratch veth in a scratch
namespace), never by TCLink's messages. ``LINK_BACKEND=netem|userspace|auto`` overrides the choice.

Both backends are Mininet ``Link`` subclasses taking ``link_params=LinkParams(...)``:

- ``NetemLink``: a veth pair with a ``netem`` root qdisc on each end's egress (delay, jitter, loss,
  rate, limit), offloads off so that loss hits single segments.
- ``TapWireLink``: two TAP devices joined by one ``topologies.tapwire`` process per link. If that
  process dies the devices vanish with it, so the link fails loudly instead of passing traffic
  unshaped.

Both support ``set_params()`` at run time, ``check()`` (raises LinkError if the emulation is not
in place) and ``describe()`` (a JSON-able record for result metadata).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mininet.link import Link

from topologies.cleanup import owned_name
from topologies.linkparams import DirectionParams, LinkConfigError, LinkParams
from topologies.shell import CommandError, in_netns, run, wait_readable

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: Prefix of every namespace, process tag and temporary name robe-lab creates (scoped clean-up).
PREFIX = "rl-"

#: Ethernet MTU used on every emulated link.
LINK_MTU = 1500


class Backend(enum.StrEnum):
    """Link emulation backends."""

    NETEM = "netem"
    USERSPACE = "userspace"


class LinkError(RuntimeError):
    """An emulated link is not (or no longer) shaping traffic as configured."""


@dataclass(frozen=True)
class BackendChoice:
    """Which backend runs the links, and why (recorded with every result)."""

    backend: Backend
    reason: str
    netem_probe: str

    def to_dict(self) -> dict[str, str]:
        """Plain dict for metadata."""
        return {"backend": self.backend.value, "reason": self.reason, "netem_probe": self.netem_probe}


def parse_backend_setting(value: str | None) -> Backend | None:
    """Parse a LINK_BACKEND setting: None/''/'auto' means probe; otherwise a Backend."""
    if value is None or value.strip().lower() in ("", "auto"):
        return None
    try:
        return Backend(value.strip().lower())
    except ValueError:
        choices = ", ".join(["auto", *[b.value for b in Backend]])
        raise LinkConfigError(f"LINK_BACKEND={value!r}: unknown link backend (expected one of {choices})") from None


def netem_probe_commands(netns: str) -> list[list[str]]:
    """Commands that build a scratch veth in namespace ``netns`` and put netem on it (in order)."""
    return [
        ["ip", "netns", "add", netns],
        ["ip", "-n", netns, "link", "add", "rlprobe0", "type", "veth", "peer", "name", "rlprobe1"],
        ["tc", "-n", netns, "qdisc", "add", "dev", "rlprobe0", "root", "netem", "delay", "1ms", "loss", "1%"],
    ]


def probe_netem() -> tuple[bool, str]:
    """Try netem for real on a scratch veth in a scratch namespace; return (works, detail)."""
    netns = owned_name("probe")
    try:
        for argv in netem_probe_commands(netns):
            try:
                run(argv, timeout=15)
            except CommandError as err:
                return False, f"{' '.join(argv[:5])}...: {err.stderr.strip() or err}"
        return True, "tc qdisc add ... netem succeeded on a scratch veth"
    finally:
        run(["ip", "netns", "del", netns], check=False, timeout=15)


def choose_backend(setting: str | None = None) -> BackendChoice:
    """Pick the backend: the LINK_BACKEND override if given (checked), else netem if the probe passes."""
    if setting is None:
        setting = os.environ.get("LINK_BACKEND")
    forced = parse_backend_setting(setting)
    if forced is Backend.USERSPACE:
        return BackendChoice(Backend.USERSPACE, "LINK_BACKEND=userspace", "not run")
    works, detail = probe_netem()
    if forced is Backend.NETEM:
        if not works:
            raise LinkConfigError(f"LINK_BACKEND=netem but netem does not work on this kernel: {detail}")
        return BackendChoice(Backend.NETEM, "LINK_BACKEND=netem", detail)
    if works:
        return BackendChoice(Backend.NETEM, "auto: netem probe succeeded", detail)
    if not os.path.exists("/dev/net/tun"):
        raise LinkError(f"no link emulation possible: netem fails ({detail}) and /dev/net/tun is missing")
    return BackendChoice(Backend.USERSPACE, "auto: netem unavailable", detail)


# ---------------------------------------------------------------------------------------------
# netem backend: command builders (pure) and the Mininet link.


def netem_limit(params: DirectionParams) -> int:
    """netem's ``limit`` counts frames in the delay line too, so add the in-flight frames to the queue."""
    if params.rate_mbit is None:
        return max(10_000, params.queue_packets)
    # Twice the bandwidth-delay product in MTU-sized frames: the delay line never fills the limit.
    in_flight = params.rate_mbit * 1e6 / 8 * (params.delay_ms + params.jitter_ms) / 1000 / LINK_MTU
    return params.queue_packets + 2 * int(in_flight) + 1


def netem_arguments(params: DirectionParams) -> list[str]:
    """netem options for one direction (``loss`` only when non-zero: netem rejects ``loss 0`` on old tc)."""
    # netem's jitter is uniform in [delay - j, delay + j]; ours is uniform in [delay, delay + jitter].
    args = ["delay", f"{params.delay_ms + params.jitter_ms / 2:g}ms"]
    if params.jitter_ms:
        args.append(f"{params.jitter_ms / 2:g}ms")
    if params.loss_pct:
        args += ["loss", "random", f"{params.loss_pct:g}%"]
    if params.rate_mbit is not None:
        args += ["rate", f"{round(params.rate_mbit * 1000)}kbit"]
    args += ["limit", str(netem_limit(params))]
    return args


def netem_qdisc_command(interface: str, params: DirectionParams) -> list[str]:
    """``tc`` command that installs (or replaces) the netem root qdisc shaping ``interface``'s egress."""
    return ["tc", "qdisc", "replace", "dev", interface, "root", "netem", *netem_arguments(params)]


def offloads_off_command(interface: str) -> list[str]:
    """Turn off segmentation offloads so that netem sees (and drops) single MTU-sized frames."""
    return ["ethtool", "-K", interface, "tso", "off", "gso", "off", "gro", "off"]


class EmulatedLink(Link):  # type: ignore[misc]
    """A Mininet link shaped by LinkParams; subclasses implement one backend."""

    backend: Backend
    intf1: Any
    intf2: Any

    def __init__(
        self,
        node1: Any,
        node2: Any,
        link_params: LinkParams | None = None,
        seed: int = 0,
        tag: str = PREFIX + "link",
        **kwargs: Any,
    ) -> None:
        self.link_params = link_params if link_params is not None else LinkParams()
        self.seed = seed
        self.tag = tag
        super().__init__(node1, node2, **kwargs)

    @property
    def name(self) -> str:
        """Readable name: ``node1:intf1-node2:intf2``."""
        return f"{self.intf1.node.name}:{self.intf1.name}-{self.intf2.node.name}:{self.intf2.name}"

    def set_params(self, params: LinkParams) -> None:
        """Change both directions at run time without rebuilding the topology."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise LinkError unless the emulation is in place."""
        raise NotImplementedError

    def reseed(self, seed: int) -> bool:
        """Restart the loss generator from ``seed`` where the backend allows; False where it does not
        (netem draws from the kernel's generator)."""
        return False

    def describe(self) -> dict[str, Any]:
        """JSON-able record of this link for result metadata."""
        return {
            "backend": self.backend.value,
            "a": f"{self.intf1.node.name}:{self.intf1.name}",
            "b": f"{self.intf2.node.name}:{self.intf2.name}",
            "params": self.link_params.to_dict(),
            "seed": self.seed,
        }


class NetemLink(EmulatedLink):
    """veth pair with a netem root qdisc on both ends (a_to_b on node1's end, b_to_a on node2's)."""

    backend = Backend.NETEM

    def __init__(self, node1: Any, node2: Any, **kwargs: Any) -> None:
        super().__init__(node1, node2, **kwargs)
        for intf in (self.intf1, self.intf2):
            run(in_netns(intf.node.pid, offloads_off_command(intf.name)))
        self.set_params(self.link_params)

    def set_params(self, params: LinkParams) -> None:
        """Replace both netem qdiscs, then verify they are installed."""
        for intf, direction in ((self.intf1, params.a_to_b), (self.intf2, params.b_to_a)):
            run(in_netns(intf.node.pid, netem_qdisc_command(intf.name, direction)))
        self.link_params = params
        self.check()

    def check(self) -> None:
        """Verify a netem qdisc sits at the root of both ends."""
        for intf in (self.intf1, self.intf2):
            shown = run(in_netns(intf.node.pid, ["tc", "qdisc", "show", "dev", intf.name]), check=False)
            if shown.returncode != 0 or "qdisc netem" not in shown.stdout:
                raise LinkError(f"link {self.name}: no netem qdisc on {intf.name}: {shown.stdout.strip()}")


# ---------------------------------------------------------------------------------------------
# userspace backend: one tapwire process per link.


def tapwire_command(
    *, tag: str, a_netns: str, a_name: str, b_netns: str, b_name: str, seed: int, mtu: int = LINK_MTU
) -> list[str]:
    """Command line of the emulator process for one link (run with this interpreter)."""
    return [
        sys.executable, "-m", "topologies.tapwire", "--tag", tag,
        "--a-netns", a_netns, "--a-name", a_name, "--b-netns", b_netns, "--b-name", b_name,
        "--mtu", str(mtu), "--seed", str(seed),
    ]  # fmt: skip


class TapWireProcess:
    """Owns one emulator process and its line-based control channel (stdin commands, stdout answers)."""

    def __init__(self, argv: list[str], params: LinkParams, timeout: float = 10.0) -> None:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        # Own process group: a Ctrl-C at the terminal must not kill the emulator before teardown
        # has shut the links down in order.
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, cwd=PROJECT_ROOT, start_new_session=True,
        )  # fmt: skip
        self.argv = argv
        self._buffer = b""
        self._lock = threading.Lock()
        ready = self.request(json.dumps(params.to_dict()), expect="READY", timeout=timeout)
        self.ready_info: dict[str, Any] = json.loads(ready or "{}")

    @property
    def pid(self) -> int:
        """Process id of the emulator."""
        return self.proc.pid

    def _read_line(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LinkError(f"emulator pid {self.pid}: no answer in time")
            readable = wait_readable(fd, left)
            if readable:
                chunk = os.read(fd, 4096)
                if not chunk:
                    raise LinkError(f"emulator pid {self.pid} exited: {self._stderr_tail()}")
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def _stderr_tail(self) -> str:
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            return "(still running)"
        err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
        return f"exit code {self.proc.returncode}: {err.strip()[-2000:]}"

    def request(self, line: str, *, expect: str, timeout: float = 5.0) -> str:
        """Send one command line and return the payload after the ``expect`` keyword of the answer."""
        with self._lock:
            if self.proc.poll() is not None:
                raise LinkError(f"emulator pid {self.pid} is dead ({self._stderr_tail()})")
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(line.encode() + b"\n")
                self.proc.stdin.flush()
            except BrokenPipeError:
                raise LinkError(f"emulator pid {self.pid} is dead ({self._stderr_tail()})") from None
            answer = self._read_line(time.monotonic() + timeout)
        word, _, payload = answer.partition(" ")
        if word != expect:
            raise LinkError(f"emulator pid {self.pid}: expected {expect}, got {answer!r}")
        return payload

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def stop(self) -> None:
        """Close the control channel (the emulator exits on EOF), then make sure it is gone."""
        if self.proc.stdin and not self.proc.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=3)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()


class TapWireLink(EmulatedLink):
    """Two TAP devices joined by a userspace emulator process (``topologies.tapwire``)."""

    backend = Backend.USERSPACE

    def __init__(self, node1: Any, node2: Any, **kwargs: Any) -> None:
        # Set before Link.__init__, which calls makeIntfPair.
        self.wire: TapWireProcess | None = None
        super().__init__(node1, node2, **kwargs)

    def makeIntfPair(  # noqa: N802  (Mininet's name)
        self,
        intfname1: str,
        intfname2: str,
        addr1: str | None = None,
        addr2: str | None = None,
        node1: Any = None,
        node2: Any = None,
        deleteIntfs: bool = True,  # noqa: N803
    ) -> None:
        """Create the two TAP devices, one in each node's namespace, owned by a new emulator."""
        if node1 is None or node2 is None:
            raise LinkConfigError("TapWireLink needs both nodes (Mininet fast link creation)")
        argv = tapwire_command(
            tag=f"{self.tag}-{intfname1}",
            a_netns=f"/proc/{node1.pid}/ns/net",
            a_name=intfname1,
            b_netns=f"/proc/{node2.pid}/ns/net",
            b_name=intfname2,
            seed=self.seed,
        )
        self.wire = TapWireProcess(argv, self.link_params)

    def set_params(self, params: LinkParams) -> None:
        """Send new parameters to the emulator; frames already queued keep their due times."""
        if self.wire is None:
            raise LinkError(f"link {self.name}: emulator not started")
        self.wire.request(json.dumps(params.to_dict()), expect="OK")
        self.link_params = params

    def stats(self) -> dict[str, Any]:
        """The emulator's per-direction counters (offered, dropped by loss or queue, delivered)."""
        if self.wire is None:
            raise LinkError(f"link {self.name}: emulator not started")
        result: dict[str, Any] = json.loads(self.wire.request('{"cmd": "stats"}', expect="STATS"))
        return result

    def reseed(self, seed: int) -> bool:
        """Restart the emulator's loss generators from ``seed``, so a run's losses do not depend on
        what the link carried before."""
        if self.wire is None:
            raise LinkError(f"link {self.name}: emulator not started")
        self.wire.request(json.dumps({"cmd": "seed", "seed": seed}), expect="OK")
        return True

    def check(self) -> None:
        """Raise LinkError if the emulator died (its TAP devices, hence the link, are gone)."""
        if self.wire is None or not self.wire.alive():
            code = None if self.wire is None else self.wire.proc.returncode
            raise LinkError(f"link {self.name}: emulator process is not running (exit code {code})")

    def describe(self) -> dict[str, Any]:
        """Add the emulator's pid and tag."""
        record = super().describe()
        record["emulator_pid"] = self.wire.pid if self.wire else None
        record["tag"] = self.tag
        return record

    def delete(self) -> None:
        """Stop the emulator (removing the TAP devices), then forget the interfaces."""
        if self.wire is not None:
            self.wire.stop()
        for intf in (self.intf1, self.intf2):
            if intf is not None:
                intf.node.delIntf(intf)
        self.intf1 = self.intf2 = None


def link_class(backend: Backend) -> type[EmulatedLink]:
    """The Mininet link class implementing ``backend``."""
    return NetemLink if backend is Backend.NETEM else TapWireLink
