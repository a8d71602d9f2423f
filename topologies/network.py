"""What every running robe-lab topology shares: naming, building through Mininet, commands in a
host's namespace, tracked processes, and a teardown that always happens.

A topology subclasses ``EmulatedNetwork``: it names its roles, returns its Mininet ``Topo`` and
configures the built hosts; ``with SomeNetwork(config) as net: ...`` then guarantees teardown.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from types import TracebackType
from typing import Any, Self

from mininet.link import Link
from mininet.net import Mininet
from mininet.topo import Topo

from robe_lab.signals import raise_interrupt
from topologies.cleanup import RUN_ENV, netns_inode, owned_name, processes_in_netns, terminate
from topologies.hosts import BoundedHost
from topologies.interrupts import deferred_interrupts
from topologies.links import BackendChoice, EmulatedLink, choose_backend, link_class
from topologies.shell import in_netns, run


def unwind_on_termination() -> dict[int, Any]:
    """Make SIGTERM/SIGHUP unwind like Ctrl-C (Python's default kills without running teardown).

    Only where nobody installed a handler already, and only in the main thread (where Python
    delivers signals). Returns the handlers to restore.
    """
    previous: dict[int, Any] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, raise_interrupt)
    return previous


class EmulatedNetwork:
    """A running topology; use as a context manager so teardown always happens.

    Teardown stops tracked processes, every other process left in the hosts' namespaces, the
    links (emulators) and the hosts.

    Attributes:
        NAME: how errors name the topology ("Figure 3").
        ROLES: the hosts' roles; host ``r`` is named ``<run_tag>-<r>``.
        HOST_CLASS: the Mininet host class (its shell must come up in bounded time).
    """

    NAME = "robe-lab"
    ROLES: tuple[str, ...] = ()
    HOST_CLASS: type[BoundedHost] = BoundedHost

    def __init__(self, backend: BackendChoice | None = None) -> None:
        if os.geteuid() != 0:
            raise PermissionError(f"building a {self.NAME} network needs root (network namespaces)")
        self.backend = backend if backend is not None else choose_backend()
        # The owner (this process) in every name: a later clean-up removes only what a dead run left.
        self.run_tag = owned_name()
        self.names = {"tag": self.run_tag, **{role: f"{self.run_tag}-{role}" for role in self.ROLES}}
        self._processes: list[subprocess.Popen[Any]] = []
        self.net: Any = None
        self._previous_handlers = unwind_on_termination()
        try:
            self._build()
        except BaseException:
            self.stop()
            raise

    # -- what a topology defines ----------------------------------------------------------------

    def topo(self, link_cls: type[EmulatedLink]) -> Topo:
        """The Mininet topology to build."""
        raise NotImplementedError

    def _configure(self) -> None:
        """Addresses, routes, sysctls ... once the hosts and links exist."""
        raise NotImplementedError

    def check_links(self) -> None:
        """Raise LinkError unless every emulated link is in place."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------

    def _build(self) -> None:
        self.net = Mininet(topo=self.topo(link_class(self.backend.backend)), controller=None, host=self.HOST_CLASS,
                           link=Link, build=False, cleanup=False)  # fmt: skip
        self.net.build()
        self._configure()
        self.check_links()

    def _sh(self, host: Any, argv: list[str], input_text: str | None = None) -> str:
        return run(in_netns(host.pid, argv), input_text=input_text).stdout

    def _mac(self, host: Any, intf: str) -> str:
        info = json.loads(self._sh(host, ["ip", "-j", "link", "show", "dev", intf]))
        return str(info[0]["address"])

    def popen(self, host: Any, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a process inside ``host``'s namespace; it is stopped at teardown.

        Its environment carries the run's tag (``ROBE_LAB_RUN``), inherited by its children, so that
        a clean-up after this process was killed (-9) finds it even once the host's shell is gone.
        """
        env = dict(kwargs.pop("env", None) or os.environ)
        env[RUN_ENV] = self.run_tag
        proc: subprocess.Popen[Any] = host.popen(argv, env=env, **kwargs)
        # Forget finished ones: a sweep starts thousands of short processes.
        self._processes = [p for p in self._processes if p.poll() is None]
        self._processes.append(proc)
        return proc

    def stop(self) -> None:
        """Stop everything this network started; safe to call twice and after a failed build.

        A Ctrl-C during the teardown is held until it is done (then raised).
        """
        with deferred_interrupts(f"tearing down {self.run_tag}"):
            self._stop()

    def _stop(self) -> None:
        for proc in self._processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._processes:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=3)
        self._processes.clear()
        if self.net is not None:
            self._kill_strays()
            net, self.net = self.net, None
            net.stop()
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _kill_strays(self) -> None:
        """Anything else still inside our hosts' namespaces (it would keep them alive)."""
        shells = {host.pid for host in self.net.hosts}
        inodes = {inode for inode in map(netns_inode, shells) if inode is not None}
        terminate(processes_in_netns(inodes, exclude=shells), grace_s=1.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
