"""Experiment 2: hybrid access page loads (the paper's sections 3.2 and 4.2, Figure 9).

``sudo make experiment2 [PROFILE=paper|quick]`` builds ``-j`` Figure 7 networks. In each: dnsmasq
answers the recorded host names (one origin address each), the replay server serves every site of
the profile over HTTP and HTTPS (certificates from a local CA that wget trusts), the HAAP relays to
the origins, and one client-side transparent proxy per strategy opens a multipath connection to the
HAAP for each TCP connection of wget. A page load: the replay is switched to the site, the client's
REDIRECT rule to the strategy's proxy, then ``wget --page-requisites --span-hosts`` fetches the
page with a private resolv.conf. Its load time runs from the first connection the proxy accepted
until the last one has closed (the proxy's connection log); wget's own wall time is kept too. A load
is ``ok`` only when wget fetched every object of the page, each object it fetched was served from
the recording and there was no replay miss.

Results: ``results/experiment2/<profile>/runs.csv`` (one row per load, appended and fsynced: a
rerun resumes, reruns a row cut short, and refuses another profile or corpus, or other code without
``--allow-mixed``; see ``experiments.runs_folder``) and ``metadata.json``; ``make plots`` draws
Figure 9 from them. Ctrl-C kills the loads in flight (wget too), waits for the workers, then tears
the networks down (a second Ctrl-C is held until that is done). A run first removes what dead runs
left behind (``topologies.cleanup``); its temporary folder (the CA key) carries its owner's PID.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import gzip
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from analysis.ownership import hand_to_invoking_user, make_results_dir
from analysis.schema import CONNECTIONS, EXPERIMENT2
from experiments import lifecycle
from experiments.browser import _key as browser_key
from experiments.browser import (
    browser_load_command,
    browser_versions,
    is_browser_initiated,
    judge_browser,
    make_browser_home,
    read_outcome,
    script_requests,
)
from experiments.cpuload import cpu_sample, idle_share
from experiments.invocation import Invocation
from experiments.lifecycle import EXPECTED_FAILURES, ExperimentError, run_guarded
from experiments.metadata import PROJECT_ROOT
from experiments.profile2 import (
    DIRECT_STRATEGIES,
    Experiment2Profile,
    LoadSpec,
    expand_loads,
    load_profile2,
    split_strategy,
)
from experiments.runs_folder import (
    record_invocation,
    repair_runs_csv,
    set_aside_rows_of_unfinished_runs,
)
from experiments.sweep import Sweep, SweepResult, append_row, finished_run_ids, pending_runs, run_then_tear_down
from experiments.timeline import CONNECTION_FIELDS, connection_rows
from experiments.wget import parse_wget_log, wget_command
from robe.mptcp_monitor import read_events as read_mptcp_events
from robe.proxy import redirect
from robe.proxy.connlog import ConnEvent, read_events
from robe.proxy.haap import losers_accepted
from robe_lab.cliparse import command_parser
from topologies import linkcounters
from topologies.cleanup import owned_name
from topologies.fig3 import allow_congestion_control, mptcp_commands
from topologies.fig7 import CLIENT_DSL, CLIENT_LTE, DNS, HAAP_INTERNET, ORIGINS, Fig7Network
from topologies.links import choose_backend
from topologies.shell import in_netns, run
from topologies.startup import READY_TIMEOUT_S, StartupError, last_line, one_line, read_line_within, wait_ready
from webreplay.adblock import default_blocklist
from webreplay.adblock import wget_args as adblock_wget_args
from webreplay.corpus import load_site
from webreplay.dns import dnsmasq_command, hosts_file_text, resolv_conf_text, with_resolver
from webreplay.dnsrelay import read_lookups
from webreplay.errors import CorpusError
from webreplay.model import Site, origin_addresses
from webreplay.replay_state import ConnectionRecord as ReplayConnection
from webreplay.replay_state import connection_log
from webreplay.server import control_request, corpus_spec_text, replay_server_command
from webreplay.tlsca import issue_server_cert, make_ca

RESULTS_BASE = PROJECT_ROOT / "results" / "experiment2"
HAAP_PORT = 8080
HAAP_USER_PORT = 8081
#: The HAAP whose userspace listener schedules like the kernel's default (``+kernel-default``).
HAAP_KDEFAULT_PORT = 8090
HAAP_KDEFAULT_USER_PORT = 8091
PROXY_BASE_PORT = 9001
DNS_STUB = "127.0.0.1"
#: Headers only: Ethernet, IP and TCP with its options (MPTCP's DSS and joins ride in them).
PCAP_SNAPLEN = 128
#: Columns of runs.csv (their types and meanings: ``analysis.schema.EXPERIMENT2``).
ROW_FIELDS = EXPERIMENT2.names


@dataclass(frozen=True)
class Options:
    """What one invocation runs."""

    profile: Experiment2Profile
    out: Path
    jobs: int
    limit: int | None
    pcap: int = 0  # capture both access links for the first N repetitions of each cell
    allow_mixed: bool = False


def _ms(later: int | None, earlier: int | None) -> str:
    return "" if later is None or earlier is None else f"{(later - earlier) / 1e6:.3f}"


def own_connections(events: list[ConnEvent]) -> list[ConnEvent]:
    """The proxy log lines of a load's own connections: a connection an earlier load opened that the
    proxy was still setting up when that load ended (its client gone; seen in an outage) logs its
    ``connected`` and ``closed`` in this load's window, and is not this load's."""
    accepted = {e["conn"] for e in events if e["event"] == "accepted"}
    ends = ("connected", "closed", "refused")
    return [e for e in events if e["event"] not in ends or e["conn"] in accepted]


def summarise_connections(events: list[ConnEvent]) -> dict[str, Any]:
    """Load window and per-connection figures from the client proxy's log lines of one load."""
    accepted = {e["conn"]: e["t_ns"] for e in events if e["event"] == "accepted"}
    closed = {e["conn"]: e for e in events if e["event"] == "closed"}
    refused = {e["conn"]: e for e in events if e["event"] == "refused"}
    connected = [e for e in events if e["event"] == "connected"]
    ends = [e["t_ns"] for e in [*closed.values(), *refused.values()]]
    # wget's side of a connection ended when the proxy read its EOF (the proxy's own close exchange
    # with the HAAP afterwards is not part of the page load); an aborted connection ends when closed.
    client_ends = [e.get("up_eof_ns") or e["t_ns"] for e in closed.values()] + [e["t_ns"] for e in refused.values()]
    paths: dict[str, int] = {}
    for event in connected:
        key = str(event.get("path"))
        paths[key] = paths.get(key, 0) + 1
    errors = [f"{c}: {e.get('error') or e.get('reason')}" for c, e in [*closed.items(), *refused.items()]
              if e.get("error") or e["event"] == "refused"]  # fmt: skip
    return {
        "first_accept_ns": min(accepted.values()) if accepted else None,
        "last_end_ns": max(ends) if ends else None,
        "last_client_end_ns": max(client_ends) if client_ends else None,
        # the last response byte the proxy passed to the client (a browser keeps idle connections
        # open after the page has loaded: its load window ends here)
        "last_down_ns": max((v for e in closed.values() if (v := e.get("last_down_ns"))), default=None),
        "open": sorted(set(accepted) - set(closed) - set(refused)),
        "connections": len(accepted),
        "bytes_down": sum(int(e.get("bytes_down") or 0) for e in closed.values()),
        "bytes_up": sum(int(e.get("bytes_up") or 0) for e in closed.values()),
        "winner_paths": ";".join(f"{int(p) + 1}:{n}" if p.isdigit() else f"{p}:{n}" for p, n in sorted(paths.items())),
        "setup_ms_median": statistics.median(e["setup_ns"] / 1e6 for e in connected) if connected else None,
        "max_subflows": max((int(e.get("subflows") or 0) for e in closed.values()), default=0),
        # the race of each connection to the HAAP: potentially initial subflows opened, losers reset
        "attempts": sum(1 for e in connected for r in e.get("race") or [] if r.get("event") == "attempt"),
        "resets_sent": sum(1 for e in connected for r in e.get("race") or [] if r.get("event") == "reset"),
        "errors": errors,
    }


def summarise_replay(connections: list[ReplayConnection]) -> dict[str, Any]:
    """``summarise_connections`` for loads without proxies, from the replay server's connection log:
    the load runs from the first connection's open to the last one's close at the server."""
    opened = [c.open_ns for c in connections]
    closed = [c.close_ns for c in connections if c.close_ns is not None]
    return {
        "first_accept_ns": min(opened) if opened else None,
        "last_end_ns": max(closed) if closed else None,
        "last_client_end_ns": max(closed) if closed else None,
        "last_down_ns": max((r.tx_ns for c in connections for r in c.request_log), default=None),
        "open": [c.id for c in connections if c.close_ns is None],
        "connections": len(connections),
        "bytes_down": sum(c.wire_bytes for c in connections),
        "bytes_up": "",
        "winner_paths": "",
        "setup_ms_median": None,
        "max_subflows": "",
        "attempts": "",
        "resets_sent": "",
        "errors": [],
    }


def build_row(spec: LoadSpec, worker: int, started_utc: str, outcome: dict[str, Any]) -> dict[str, Any]:
    """One runs.csv row; ``outcome`` holds what the load measured (see ``LoadWorker.run``)."""
    row: dict[str, Any] = dict.fromkeys(ROW_FIELDS, "")
    row.update(run_id=spec.run_id, site=spec.site, strategy=spec.strategy, repetition=spec.repetition,
               seed=spec.seed, worker=worker, started_utc=started_utc)  # fmt: skip
    row.update({k: v for k, v in outcome.items() if k in ROW_FIELDS})
    for key in ("setup_ms_median",):
        if isinstance(row[key], float):
            row[key] = f"{row[key]:.3f}"
    return row


def judge(expected: int, fetched: int, served: int, misses: int, wget_ok: bool, open_conns: int) -> str:
    """Empty when the load is complete and faithful, else why not."""
    problems = []
    if not wget_ok:
        problems.append("wget reported errors")
    if misses:
        problems.append(f"{misses} replay miss(es)")
    if not fetched == served == expected:
        problems.append(f"objects: wget fetched {fetched}, replay served {served}, page has {expected}")
    if open_conns:
        problems.append(f"{open_conns} proxy connection(s) did not close")
    return "; ".join(problems)


class LoadWorker:
    """One Figure 7 network with its DNS, replay, HAAP and client proxies; runs page loads in turn."""

    def __init__(self, index: int, profile: Experiment2Profile, sites: dict[str, Site], addresses: dict[str, str],
                 work: Path, tls: dict[str, Path], stack: ExitStack, out: Path | None = None,
                 pcap: int = 0) -> None:  # fmt: skip
        self.index = index
        self.profile = profile
        self.sites = sites
        self.host_of = {address: host for host, address in addresses.items()}
        self.dir = work / f"worker{index}"
        self.dir.mkdir(parents=True)
        (self.dir / "scratch").mkdir()
        self.tls = tls
        self.out = out
        self.pcap = pcap
        self.csv_lock = threading.Lock()
        config = profile.fig7_config(tuple(sorted(set(addresses.values()))), seed=profile.seed + 100 * index)
        self.net = stack.enter_context(Fig7Network(config, choose_backend()))
        # What each load puts on the client's access links (the cost of robustness).
        self.counters = linkcounters.LinkCounters(lambda argv: self.net.sh("client", list(argv)), ("a1", "a2"))
        self.counters.install()
        self.env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        strategies = [split_strategy(label) for label in profile.strategies]
        if profile.client == "chromium":  # its trust store: an NSS database with the replay's CA
            make_browser_home(self.dir / "home", tls["ca"])
        (self.dir / "hosts").write_text(hosts_file_text(addresses))
        (self.dir / "resolv.conf").write_text(resolv_conf_text(DNS_STUB))
        self.stderr_files: dict[int, Path] = {}
        dnsmasq = self._start("dns", dnsmasq_command(DNS, self.dir / "hosts", self.dir / "dnsmasq.pid",
                                                     self.dir / "dnsmasq.log", log_queries=False),
                              ready=None)  # fmt: skip
        # wget's resolver: a stub in the client that logs every lookup and forwards it over the
        # default path (or answers from its local cache).
        cache = ["--cache", str(self.dir / "hosts")] if profile.dns == "local-cache" else []
        self._start("client", [sys.executable, "-m", "webreplay.dnsrelay", "--listen", DNS_STUB, "--upstream", DNS,
                               "--log", str(self.dir / "dns.log"), *cache], ready="READY")  # fmt: skip
        self._start("client", [sys.executable, "-m", "robe.mptcp_monitor", "--log", str(self.dir / "mptcp.log")],
                    ready="READY")  # fmt: skip
        mptcp_origins = "direct-mptcp" in profile.strategies
        if mptcp_origins:  # wget's own MPTCP sockets reach the origins: they accept the joins
            for argv in mptcp_commands(config.mptcp_subflows, client=False):
                self.net.sh("web", argv)
        if profile.lte_backup:  # the LTE endpoint's subflows are backups: used only without DSL
            self.net.sh("client", ["ip", "mptcp", "endpoint", "change", "id", "1", "backup"])
        (self.dir / "spec.json").write_text(corpus_spec_text((profile.corpus, name) for name in sites))
        self.control = self.dir / "replay.sock"
        self._start("web", replay_server_command(self.dir / "spec.json", self.control, cert=tls["cert"],
                                                 key=tls["key"], mptcp=mptcp_origins, tls_max=profile.tls_max),
                    ready="READY")  # fmt: skip
        self.haaps = {"lowest-rtt": (HAAP_PORT, HAAP_USER_PORT)}
        if any(scheduler != "lowest-rtt" for _, scheduler in strategies):
            self.haaps["kernel-default"] = (HAAP_KDEFAULT_PORT, HAAP_KDEFAULT_USER_PORT)
        for scheduler, (port, user_port) in self.haaps.items():
            self._start("haap", [sys.executable, "-m", "robe.proxy.haap", "--bind", "0.0.0.0", "--port", str(port),
                                 "--user-port", str(user_port), "--allow", ORIGINS, "--user-scheduler", scheduler,
                                 "--log", str(self._haap_log(scheduler))], ready="READY")  # fmt: skip
        self.wget: subprocess.Popen[str] | None = None  # the load in flight (Ctrl-C kills it)
        self.stopping = False
        self.ports: dict[str, int] = {}
        for k, label in enumerate(profile.strategies):
            strategy, scheduler = split_strategy(label)
            if strategy in DIRECT_STRATEGIES:
                continue
            port = PROXY_BASE_PORT + k
            self.ports[label] = port
            haap, haap_user = self.haaps[scheduler]
            self._start("client", [sys.executable, "-m", "robe.proxy.client_proxy", "--listen-port", str(port),
                                   "--listen-addr", "127.0.0.1", "--haap", f"{HAAP_INTERNET}:{haap}",
                                   "--haap-user", f"{HAAP_INTERNET}:{haap_user}", "--strategy", strategy,
                                   "--scheduler", scheduler, "--source", CLIENT_LTE, "--source", CLIENT_DSL,
                                   "--log", str(self._proxy_log(label))], ready="READY")  # fmt: skip
        self._wait_dns(dnsmasq)

    def _proxy_log(self, label: str) -> Path:
        return self.dir / f"proxy-{label}.log"

    def _haap_log(self, scheduler: str) -> Path:
        return self.dir / f"haap-{scheduler}.log"

    def _start(self, role: str, argv: list[str], ready: str | None) -> subprocess.Popen[str]:
        stderr_file = self.dir / f"{role}-{len(os.listdir(self.dir))}.stderr"
        with stderr_file.open("w") as stderr:
            proc = self.net.popen(self.net.host(role), argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                  env=self.env, cwd=PROJECT_ROOT)  # fmt: skip
        self.stderr_files[proc.pid] = stderr_file
        if ready is not None:
            what = f"worker {self.index}: {argv[2] if len(argv) > 2 else argv[0]} in {role}"
            wait_ready(proc, what, ready, stderr_file=stderr_file)
        return proc

    def _wait_dns(self, dnsmasq: subprocess.Popen[str]) -> None:
        """The DNS server answers through the stub before the first load (dnsmasq binds a moment after
        starting); the lookups of this check are not part of any load."""
        name = next(iter(self.sites.values())).hosts()[0]
        argv = with_resolver(self.dir / "resolv.conf", ["getent", "hosts", name])
        deadline = time.monotonic() + 10
        while True:
            if run(in_netns(self.net.host("client").pid, argv), check=False).returncode == 0:
                return
            said = last_line(self.stderr_files[dnsmasq.pid].read_text(errors="replace"))
            if dnsmasq.poll() is not None:
                raise StartupError(one_line(f"worker {self.index}: dnsmasq in dns did not start: exited "
                                            f"{dnsmasq.returncode}: {said}"))  # fmt: skip
            if time.monotonic() > deadline:
                raise StartupError(f"worker {self.index}: dnsmasq in dns does not answer {name} within 10 s")
            time.sleep(0.1)

    def _client(self, argv: Sequence[str]) -> Any:
        return run(in_netns(self.net.host("client").pid, argv))

    def _start_capture(self, spec: LoadSpec) -> list[tuple[subprocess.Popen[str], Path]]:
        """tcpdump on both access links (headers only), running before the load starts."""
        assert self.out is not None
        folder = make_results_dir(self.out / "pcap")
        captures = []
        for intf in ("a1", "a2"):
            path = folder / f"{spec.run_id}-{intf}.pcap"
            argv = [
                "tcpdump",
                "-Z",
                "root",
                "-i",
                intf,
                "-s",
                str(PCAP_SNAPLEN),
                "-U",
                "--immediate-mode",
                "-n",
                "-w",
                str(path),
                "tcp",
            ]
            proc = self.net.popen(self.net.host("client"), argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True)  # fmt: skip
            assert proc.stderr is not None
            line = read_line_within(proc.stderr)  # "listening on a1, ...": capturing from now on
            if line is None or "listening" not in line:
                proc.kill()
                said = f"nothing within {READY_TIMEOUT_S:g} s" if line is None else repr(line.strip())
                raise ExperimentError(f"worker {self.index}: tcpdump on {intf} did not start: {said}")
            captures.append((proc, path))
        return captures

    @staticmethod
    def _stop_capture(captures: list[tuple[subprocess.Popen[str], Path]]) -> str:
        """Stop the captures and gzip them (headers compress well); their file names."""
        for proc, _ in captures:
            proc.send_signal(signal.SIGINT)
        names = []
        for proc, path in captures:
            try:
                proc.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
            packed = path.with_name(path.name + ".gz")
            with path.open("rb") as raw, gzip.open(packed, "wb") as out:
                shutil.copyfileobj(raw, out)
            path.unlink()
            hand_to_invoking_user(packed)
            names.append(packed.name)
        return ";".join(names)

    def _append_connections(self, rows: list[dict[str, Any]]) -> None:
        if self.out is None:
            return
        for row in rows:
            append_row(self.out / "connections.csv", row, self.csv_lock, CONNECTIONS)

    def _client_argv(self, spec: LoadSpec, site: Site, strategy: str) -> list[str]:
        """The page load's command (wget, or the browser driver), with the private resolv.conf."""
        if self.profile.client == "chromium":
            har = None
            if self.out is not None and spec.repetition < self.profile.har_loads:
                (self.out / "har").mkdir(exist_ok=True)
                har = self.out / "har" / f"{spec.run_id}.har"
            argv = browser_load_command(site.main_url, result=self.dir / "browser.json", home=self.dir / "home",
                                        profile_dir=self.dir / "scratch" / "browser", har=har, python=sys.executable,
                                        timeout_s=max(1.0, self.profile.load_timeout_s - 5))  # fmt: skip
            return with_resolver(self.dir / "resolv.conf", argv)
        wget_log = self.dir / "wget.log"
        wget = wget_command(site.main_url, scratch_dir=self.dir / "scratch", ca_certificate=self.tls["ca"],
                            log_file=wget_log, exclusions=adblock_wget_args(default_blocklist()), timeout_s=30,
                            keep_alive=self.profile.connection_reuse == "keep-alive")  # fmt: skip
        if strategy == "direct-mptcp":
            wget = ["mptcpize", "run", *wget]
        return with_resolver(self.dir / "resolv.conf", wget)

    def run(self, spec: LoadSpec) -> dict[str, Any]:
        """One page load; returns its row (and appends its connections to connections.csv)."""
        site = self.sites[spec.site]
        strategy, scheduler = split_strategy(spec.strategy)
        direct = strategy in DIRECT_STRATEGIES
        browser = self.profile.client == "chromium"
        started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        control_request(self.control, {"cmd": "activate", "site": spec.site})
        control_request(self.control, {"cmd": "reset"})
        logs = {"proxy": self._proxy_log(spec.strategy), "haap": self._haap_log(scheduler),
                "dns": self.dir / "dns.log", "mptcp": self.dir / "mptcp.log"}  # fmt: skip
        offsets = {name: path.stat().st_size if path.exists() else 0 for name, path in logs.items()}
        wget_log = self.dir / "wget.log"
        wget_log.unlink(missing_ok=True)
        (self.dir / "browser.json").unlink(missing_ok=True)
        shutil.rmtree(self.dir / "scratch" / "browser", ignore_errors=True)
        argv = self._client_argv(spec, site, strategy)
        rule = None
        if not direct:
            rule = redirect.RedirectConfig(to_port=self.ports[spec.strategy], networks=(ORIGINS,),
                                           exclude=(HAAP_INTERNET,))  # fmt: skip
            redirect.install(rule, runner=self._client)
        captures = self._start_capture(spec) if spec.repetition < self.pcap else []
        status, error, pcap = "ok", "", ""
        try:
            if self.stopping:
                raise ExperimentError("interrupted")
            wire_before = self.counters.reading()
            cpu_before = cpu_sample()
            t0 = time.monotonic_ns()
            proc = self.net.popen(self.net.host("client"), argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                  text=True, start_new_session=True, env=self.env, cwd=PROJECT_ROOT)  # fmt: skip
            self.wget = proc
            try:
                _, stderr = proc.communicate(timeout=self.profile.load_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                status, error = "censored", f"page not loaded within {self.profile.load_timeout_s:g} s"
                stderr = ""
            t1 = time.monotonic_ns()
            cpu_idle = idle_share(cpu_before, cpu_sample())
        finally:
            self.wget = None
            if rule is not None:
                redirect.remove(rule, runner=self._client)
            shutil.rmtree(self.dir / "scratch" / "browser", ignore_errors=True)
        if self.stopping:  # killed by Ctrl-C: not a result, and no time to spend on its logs
            raise ExperimentError("interrupted")
        events: list[ConnEvent] = []
        deadline = time.monotonic() + 10
        while not direct:  # the client has exited: the proxy logs each connection's end within moments
            new, offsets["proxy"] = read_events(logs["proxy"], offsets["proxy"])
            events = own_connections([*events, *new])
            summary = summarise_connections(events)
            if not summary["open"] or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        # Every connection of the load has ended (the proxy logged it, or the deadline passed).
        wire = linkcounters.difference(wire_before, self.counters.reading()).columns()
        stats = control_request(self.control, {"cmd": "stats"})["stats"]
        if direct:  # the replay server's connections are the client's; wait for it to log their ends
            while any(c.close_ns is None for c in connection_log(stats)) and time.monotonic() < deadline:
                time.sleep(0.02)
                stats = control_request(self.control, {"cmd": "stats"})["stats"]
            summary = summarise_replay(connection_log(stats))
        if captures:
            time.sleep(0.05)  # the last FIN/ACKs on the wire
            pcap = self._stop_capture(captures)
        haap_events = read_events(logs["haap"], offsets["haap"])[0]
        mptcp_events = read_mptcp_events(logs["mptcp"], offsets["mptcp"])[0]
        dns = [e for e in read_lookups(logs["dns"], offsets["dns"])[0] if e.t_ns >= t0]
        extra_names = sorted({e.name for e in dns} - set(site.hosts()))
        misses = int(stats.get("misses", 0))
        served_urls: dict[str, int] = stats.get("served_urls", {})
        page_urls = {e.url for e in site.exchanges}
        served = sum(1 for url in served_urls if url in page_urls)
        fields: dict[str, Any] = {"client": self.profile.client}
        page_misses: list[dict[str, Any]] = []
        if browser:
            outcome = read_outcome(self.dir / "browser.json")
            page = {browser_key(e.url): len(e.body) for e in site.exchanges}
            scripted = script_requests(outcome, list(page_urls))
            scripted_keys = {browser_key(r["url"]) for r in scripted}
            page_misses = [m for m in stats.get("miss_log", []) if browser_key(str(m.get("url"))) not in scripted_keys]
            if status == "ok":
                error = judge_browser(outcome, page, len(page_misses), served)
                if proc.returncode != 0:
                    error = "; ".join(x for x in (error, f"browser driver exited {proc.returncode}: "
                                                            f"{last_line(stderr)}") if x)  # fmt: skip
            fetched = outcome.fetched_keys()
            failed = [r for r in outcome.failed() if not is_browser_initiated(r["url"], list(page_urls))
                      and browser_key(r["url"]) not in scripted_keys]  # fmt: skip
            nav = outcome.nav_load_ms
            fields.update(nav_load_ms=f"{nav:.3f}" if nav is not None and status == "ok" and not error else "",
                          browser_ms=_ms(t1, t0), browser_requests=len(outcome.requests),
                          failed_requests=len(failed), objects_fetched=sum(1 for k in page if k in fetched),
                          duplicate_fetches=sum(n - 1 for k, n in fetched.items() if k in page and n > 1),
                          script_requests=len(scripted),
                          har=str(outcome.extra.get("har") or ""))  # fmt: skip
            if outcome.extra.get("cpu_idle_share") is not None:  # the navigation itself, not the start-up
                cpu_idle = float(outcome.extra["cpu_idle_share"])
            if failed:
                error += " (failed: " + "; ".join(f"{r['url']}: {r['failure']}" for r in failed[:3]) + ")"
            end_ns = summary["last_down_ns"]
        else:
            wget = parse_wget_log(wget_log.read_text(errors="replace") if wget_log.exists() else "", proc.returncode)
            if status == "ok":
                error = judge(len(site.exchanges), len(wget.fetched), int(stats.get("served", 0)), misses, wget.ok,
                              len(summary["open"]))  # fmt: skip
                if stderr.strip() and not wget.fetched:
                    error = error or stderr.strip()[-300:]
            fields.update(wget_ms=_ms(t1, t0), objects_fetched=len(wget.fetched))
            end_ns = summary["last_client_end_ns"]
        if status == "ok" and extra_names:
            error = "; ".join(x for x in (error, f"DNS lookups beyond the page's names: {', '.join(extra_names)}") if x)
        if status == "ok" and error:
            status = "failed"
        miss_log = page_misses if browser else stats.get("miss_log", [])  # a browser's scripts' own: apart
        miss_urls = [m.get("url") for m in miss_log][:5]
        if miss_urls:
            error += f" (misses: {', '.join(map(str, miss_urls))})"
        if summary["errors"]:
            error += f" (proxy: {'; '.join(summary['errors'][:3])})"
        self._append_connections(connection_rows(
            run_id=spec.run_id, site=spec.site, strategy=spec.strategy, repetition=spec.repetition, t0_ns=t0,
            proxy_events=[] if direct else events, haap_events=[] if direct else haap_events,
            replay_connections=connection_log(stats), dns_events=dns, mptcp_events=mptcp_events,
            host_of=self.host_of, sources=(CLIENT_LTE, CLIENT_DSL)))  # fmt: skip
        ok = status == "ok"
        return build_row(spec, self.index, started, {
            "status": status,
            "load_ms": _ms(end_ns, summary["first_accept_ns"]) if ok else "",
            "load_close_ms": _ms(summary["last_end_ns"], summary["first_accept_ns"]) if ok else "",
            "objects_expected": len(site.exchanges),
            "objects_served": served if browser else int(stats.get("served", 0)),
            "replay_misses": len(page_misses) if browser else misses,
            "connections": summary["connections"],
            "bytes_down": summary["bytes_down"],
            "bytes_up": summary["bytes_up"],
            "winner_paths": summary["winner_paths"],
            "setup_ms_median": summary["setup_ms_median"] if summary["setup_ms_median"] is not None else "",
            "max_subflows": summary["max_subflows"],
            "dns_ms": f"{sum(e.answer_ns - e.t_ns for e in dns) / 1e6:.3f}" if dns else "",
            "dns_lookups": len(dns),
            "pcap": pcap,
            "own_requests": int(stats.get("browser_requests", 0)),
            "hsts_upgrades": int(stats.get("hsts_upgrades", 0)),
            "cpu_idle_pct": f"{100 * cpu_idle:.1f}" if cpu_idle is not None else "",
            "dns_extra_names": ";".join(extra_names),
            "error": error.strip(),
            "attempts": summary["attempts"],
            "resets_sent": summary["resets_sent"],
            "losers_accepted": "" if direct else losers_accepted(haap_events),
            **wire,
            **fields,
        })  # fmt: skip

    def interrupt(self) -> None:
        """Ctrl-C: kill the load in flight (wget and whatever it started); no new one starts."""
        self.stopping = True
        proc = self.wget
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def load_sites(profile: Experiment2Profile) -> dict[str, Site]:
    """Every site of the profile, loaded (ExperimentError naming the site on a corpus problem)."""
    sites = {}
    for name in profile.sites:
        try:
            sites[name] = load_site(profile.corpus, name)
        except CorpusError as err:
            raise ExperimentError(f"site {profile.corpus}/{name}: {err}") from None
    return sites


def check_before_building(options: Options) -> None:
    """Root, the programs the loads run, MPTCP and a writable results folder (``experiments.lifecycle``)."""
    lifecycle.check_before_building("experiment2", options.out, tools_needed(options))


def tools_needed(options: Options) -> list[str]:
    """The programs a sweep of ``options`` runs."""
    tools = ["wget", "dnsmasq", "iptables", "unshare", "stdbuf"]
    if options.profile.client == "chromium":
        tools += ["chromium", "certutil"]
    if "direct-mptcp" in options.profile.strategies:
        tools.append("mptcpize")
    if options.pcap:
        tools.append("tcpdump")
    return tools


def run_sweep(options: Options) -> int:
    """Check, lock the results folder, then run every pending load (``_run_locked``, or
    ``timevarying2.run_timeline`` for paths that change over time); exit status."""
    return lifecycle.run_in_folder("experiment2", options.out, lambda: _run_in_folder(options), tools_needed(options))


def _run_in_folder(options: Options) -> int:
    if options.profile.timeline() is not None:  # paths that change over time
        from experiments.timevarying2 import run_timeline

        return run_timeline(options)
    return _run_locked(options)


def _set_aside_connections(runs_csv: Path) -> list[str]:
    """connections.csv takes a load's rows before runs.csv takes its row: a run cut in between is done
    again, and its connections must not be counted twice."""
    connections_csv = runs_csv.parent / "connections.csv"
    notes = repair_runs_csv(connections_csv, CONNECTION_FIELDS)
    return notes + set_aside_rows_of_unfinished_runs(connections_csv, CONNECTION_FIELDS, finished_run_ids(runs_csv))


def _run_locked(options: Options) -> int:
    profile = options.profile
    settings = {"jobs": options.jobs, "limit": options.limit, "out": str(options.out), "pcap": options.pcap,
                "allow_mixed": options.allow_mixed}  # fmt: skip
    invocation = Invocation.begin(options.out, "experiment2", "loads", settings, profile.identity())
    invocation.record["corpus_sha256"] = profile.corpus_hash()
    sites = load_sites(profile)
    loads = expand_loads(profile)
    pending = invocation.plan(lambda: pending_runs(loads, invocation.runs_csv, options.limit), len(loads),
                              allow_mixed=options.allow_mixed, fields=ROW_FIELDS, jobs=options.jobs,
                              title=f"experiment 2, profile {profile.name}", unit="load",
                              repairs=lambda: _set_aside_connections(invocation.runs_csv))  # fmt: skip
    if not pending:
        return 0
    addresses = origin_addresses([h for s in sites.values() for h in s.hosts()])
    if profile.client == "chromium":
        invocation.record["tools"].update(browser_versions())
    allow_congestion_control("cubic")

    def start(stack: ExitStack) -> Callable[[], SweepResult]:
        # The CA's key lives here: named with our PID, so that a clean-up after kill -9 removes it.
        work = Path(tempfile.mkdtemp(prefix=owned_name("exp2") + "-"))
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        ca = make_ca(work / "ca")
        leaf = issue_server_cert(ca, sorted(addresses), work / "tls")
        tls = {"ca": ca.cert, "cert": leaf.cert, "key": leaf.key}
        workers = []
        for index in range(min(options.jobs, len(pending))):
            workers.append(LoadWorker(index, profile, sites, addresses, work, tls, stack, options.out,
                                      options.pcap))  # fmt: skip
            print(f"worker {index}: network {workers[-1].net.run_tag} ready", flush=True)
        invocation.record.update(
            network=workers[0].net.describe(),
            sites={name: {"source": s.source, "main_url": s.main_url, "objects": len(s.exchanges),
                          "hosts": len(s.hosts()), "bytes": sum(len(e.body) for e in s.exchanges)}
                   for name, s in sites.items()},
        )  # fmt: skip
        invocation.metadata.update({
            "kind": "experiment2",
            "profile": profile.to_dict(),
            "profile_fingerprint": profile.fingerprint(),
            "corpus_sha256": invocation.record["corpus_sha256"],
            "origin_hosts": len(addresses),
        })  # fmt: skip
        record_invocation(invocation.metadata, invocation.record, ("git", "network", "sites"))
        invocation.save()
        sweep: Sweep[LoadWorker, LoadSpec] = Sweep(
            workers, run=LoadWorker.run,
            error_row=lambda worker, spec, err: build_row(spec, worker.index, "", {"status": "error",
                                                                                  "error": repr(err)}),
            runs_csv=invocation.runs_csv, schema=EXPERIMENT2, desc=f"experiment2/{profile.name}", unit="load",
            interrupt=LoadWorker.interrupt, join_timeout_s=60.0, row_stamp={"invocation": invocation.record["id"]},
        )  # fmt: skip
        return lambda: sweep.execute(pending)

    def record(result: SweepResult) -> None:
        invocation.finish(interrupted=result.interrupted, counts=result.counts, unwritten=result.unwritten,
                          run_ids=(load.run_id for load in loads))  # fmt: skip

    return lifecycle.report_end(run_then_tear_down(start, record), "loads", options.out)


def parse_args(argv: list[str] | None = None) -> Options:
    """Command line -> validated Options (errors name the bad option and value)."""
    parser = command_parser("experiments.experiment2", __doc__)
    lifecycle.add_sweep_options(parser, unit="load", results="results/experiment2", jobs_default=None,
                                jobs_help="parallel Figure 7 networks (default 3 for wget, 1 for a browser: it "
                                          "needs both CPUs)")  # fmt: skip
    parser.add_argument("--pcap", type=int, default=0, metavar="N",
                        help="capture both access links (headers only) for the first N loads of each cell")  # fmt: skip
    args = parser.parse_args(argv)
    profile, out = lifecycle.sweep_arguments(parser, args, load_profile2, RESULTS_BASE, max_jobs=16,
                                             default_jobs=lambda p: 1 if p.client == "chromium" else 3)  # fmt: skip
    return Options(profile, out, args.jobs, args.limit, args.pcap, args.allow_mixed)


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse, check, run; one-line errors for every expected failure."""
    options = parse_args(argv)
    return run_guarded(lambda: run_sweep(options), failures=EXPECTED_FAILURES, prefix="experiment2: ")


if __name__ == "__main__":
    sys.exit(main())
