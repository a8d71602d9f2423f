"""``robe-lab shell fig3|fig7``: a Figure 3 or Figure 7 network to use by hand, torn down on exit.

``fig3``: the client (Host A) with two paths to the server (Host B), which runs ``robe serve`` (or
``robe serve-user`` for a userspace strategy); the shell's ``$ROBE_CONNECT`` opens one connection
with the chosen strategy. ``fig7``: the hybrid-access network with one recorded site replayed, its
DNS, the HAAP and the client proxy of the chosen strategy running; the client's web traffic goes
through the proxy as in experiment 2, so ``curl $ROBE_URL`` (or wget, or a browser) loads the page.

The shell runs in the client's network namespace (for ``fig7`` with the private resolver, and curl,
wget and OpenSSL trusting the replay's certificate authority); ``--cli`` opens Mininet's CLI
instead, ``--command`` runs one command and exits with its status. Everything started (hosts,
links, servers, proxies) is removed when the shell exits, also after Ctrl-C, SIGTERM or SIGHUP.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robe_lab.cliparse import command_parser

#: Port of the fig3 server (``robe serve`` / ``robe serve-user``).
FIG3_PORT = 5000


class ShellError(RuntimeError):
    """The network of the shell could not be built; the message says why in one line."""


@dataclass(frozen=True)
class Session:
    """What the user's shell gets: the namespace, the command wrapper and the environment."""

    netns_pid: int
    run_tag: str
    env: dict[str, str]
    wrap: tuple[str, ...] = ()  # e.g. the private resolver's mount wrapper
    banner: str = ""
    mininet: Any = None  # the Mininet object (for --cli)
    nodes: tuple[tuple[str, str], ...] = ()  # (role, Mininet node name): the CLI takes the roles too
    exports: tuple[tuple[str, str], ...] = ()  # variables the CLI's client shell gets ($ROBE_CONNECT, ...)


def shell_argv(session: Session, command: str | None, interactive: bool) -> list[str]:
    """The command line of the user's shell in the client's namespace (pure)."""
    from topologies.shell import in_netns

    body = ["bash", "--norc", "--noprofile", *(["-i"] if interactive and command is None else [])]
    if command is not None:
        body += ["-c", command]
    return in_netns(session.netns_pid, [*session.wrap, *body])


def run_user_shell(session: Session, command: str | None) -> int:
    """Run the shell (or one command) in the foreground; Ctrl-C belongs to it while it runs."""
    from topologies.cleanup import RUN_ENV

    interactive = sys.stdin.isatty() and command is None
    if session.banner and command is None:
        print(session.banner, file=sys.stderr, flush=True)
    env = {**session.env, RUN_ENV: session.run_tag}  # a clean-up after kill -9 finds it too
    proc = subprocess.Popen(shell_argv(session, command, interactive), env=env)
    # Ctrl-C belongs to the shell while it runs (it started with the default action: an ignored
    # signal would be inherited); SIGTERM/SIGHUP still unwind us (topologies.network).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        code = proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    return 128 - code if code < 0 else code  # killed by signal N: 128 + N, as a shell says


def user_env(extra: dict[str, str]) -> dict[str, str]:
    """The shell's environment: ours, a prompt that says where it is, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASH_FUNC_")}
    env["PS1"] = r"robe-lab client:\w\$ "
    return {**env, **extra}


# ---------------------------------------------------------------------------------------------
# Figure 3


@contextmanager
def fig3_session(args: Any) -> Iterator[Session]:
    """Figure 3 with ``robe serve`` on the server; the session is the client's."""
    from topologies.fig3 import CLIENT_A1, CLIENT_A2, SERVER_B1, Fig3Config, Fig3Network, PathConfig
    from topologies.linkparams import LinkConfigError
    from topologies.startup import wait_ready

    try:
        config = Fig3Config(
            path1=PathConfig(rtt_ms=args.rtt1, rate_mbit=args.rate, loss_pct=args.loss,
                             loss_direction=args.loss_direction),
            path2=PathConfig(rtt_ms=args.rtt2, rate_mbit=args.rate), tcp_syn_linear_timeouts=0,
        )  # fmt: skip
    except LinkConfigError as err:
        raise ShellError(str(err)) from None
    with Fig3Network(config) as net:
        user = args.strategy in USERSPACE
        serve = [sys.executable, "-m", "robe", "serve-user" if user else "serve", "--bind", SERVER_B1,
                 "--port", str(FIG3_PORT)]  # fmt: skip
        proc = net.popen(net.server, serve, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        wait_ready(proc, f"{serve[3]} in server", "LISTENING")
        connect = shlex.join([sys.executable, "-m", "robe", "connect", "--strategy", args.strategy, "--server",
                              f"{SERVER_B1}:{FIG3_PORT}", "--source", CLIENT_A1, "--source", CLIENT_A2])  # fmt: skip
        banner = (f"robe-lab shell fig3 ({net.run_tag}): path 1 {args.rtt1:g} ms RTT, {args.loss:g} % loss "
                  f"({args.loss_direction}); path 2 {args.rtt2:g} ms. Server {SERVER_B1}:{FIG3_PORT} runs "
                  f"robe {serve[3]}.\n  $ROBE_CONNECT opens one {args.strategy} connection. exit (or Ctrl-D) "
                  f"tears the network down.")  # fmt: skip
        exports = {"ROBE_CONNECT": connect, "ROBE_SERVER": SERVER_B1}
        yield Session(net.client.pid, net.run_tag, user_env(exports), banner=banner, mininet=net.net,
                      nodes=roles(net.names), exports=tuple(exports.items()))  # fmt: skip


# ---------------------------------------------------------------------------------------------
# Figure 7


@contextmanager
def fig7_session(args: Any) -> Iterator[Session]:
    """Figure 7 with the site replayed, DNS, the HAAP and the strategy's client proxy running."""
    from experiments.experiment2 import LoadWorker, load_sites
    from experiments.profile import PathSpec, ProfileError
    from experiments.profile2 import DIRECT_STRATEGIES, Experiment2Profile, split_strategy
    from robe.proxy import redirect
    from topologies.cleanup import owned_name
    from topologies.fig3 import PathConfig
    from topologies.fig7 import HAAP_INTERNET, ORIGINS
    from webreplay.model import origin_addresses
    from webreplay.server import control_request
    from webreplay.tlsca import issue_server_cert, make_ca

    try:
        profile = Experiment2Profile(
            name="shell", description="robe-lab shell fig7", corpus=args.corpus, sites=(args.site,),
            strategies=(args.strategy,), repetitions=1, internet_rtt_ms=args.internet_rtt,
            lte=PathSpec(rtt_ms=args.rtt1, rate_mbit=args.rate), dsl=PathSpec(rtt_ms=args.rtt2, rate_mbit=args.rate),
        )  # fmt: skip
        sites = load_sites(profile)
    except (ProfileError, RuntimeError) as err:
        raise ShellError(str(err)) from None
    site = sites[args.site]
    addresses = origin_addresses(site.hosts())
    work = Path(tempfile.mkdtemp(prefix=owned_name("shell") + "-"))
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, ignore_errors=True)
        ca = make_ca(work / "ca")
        leaf = issue_server_cert(ca, sorted(addresses), work / "tls")
        worker = LoadWorker(0, profile, sites, addresses, work, {"ca": ca.cert, "cert": leaf.cert, "key": leaf.key},
                            stack)  # fmt: skip
        if args.loss:  # the default path (LTE); experiment 2's profiles have no loss
            lte = PathConfig(rtt_ms=args.rtt1, rate_mbit=args.rate, loss_pct=args.loss,
                             loss_direction=args.loss_direction)  # fmt: skip
            worker.net.links()["lte"].set_params(lte.link_params())
        control_request(worker.control, {"cmd": "activate", "site": args.site})
        strategy, _ = split_strategy(args.strategy)
        if strategy not in DIRECT_STRATEGIES:  # web traffic into the strategy's client proxy
            rule = redirect.RedirectConfig(to_port=worker.ports[args.strategy], networks=(ORIGINS,),
                                           exclude=(HAAP_INTERNET,))  # fmt: skip
            redirect.install(rule, runner=worker._client)
        client = worker.net.host("client")
        from webreplay.dns import with_resolver

        wrap = tuple(with_resolver(worker.dir / "resolv.conf", ["true"])[:-1])
        exports = {"ROBE_URL": site.main_url, "CURL_CA_BUNDLE": str(ca.cert), "SSL_CERT_FILE": str(ca.cert),
                   "WGETRC": str(wgetrc(work, ca.cert)), "ROBE_LOGS": str(worker.dir),
                   "ROBE_RESOLVER": shlex.join(wrap)}  # fmt: skip
        env = user_env(exports)
        banner = (f"robe-lab shell fig7 ({worker.net.run_tag}): {args.corpus}/{args.site} replayed, strategy "
                  f"{args.strategy}; LTE {args.rtt1:g} ms ({args.loss:g} % loss), DSL {args.rtt2:g} ms, internet "
                  f"{args.internet_rtt:g} ms.\n  curl $ROBE_URL loads the main page (wget and OpenSSL trust the "
                  f"replay's CA too); logs in $ROBE_LOGS. exit (or Ctrl-D) tears the network down.")  # fmt: skip
        yield Session(client.pid, worker.net.run_tag, env, wrap=wrap, banner=banner, mininet=worker.net.net,
                      nodes=roles(worker.net.names), exports=tuple(exports.items()))  # fmt: skip


def wgetrc(work: Path, ca: Path) -> Path:
    """A wgetrc that makes wget trust the replay's CA."""
    path = work / "wgetrc"
    path.write_text(f"ca_certificate = {ca}\n")
    return path


USERSPACE = ("mptcp-user", "robe-downgrade", "robe-bbm", "robe-esim")


def build_parser() -> Any:
    """The command line of ``robe-lab shell``."""
    parser = command_parser("robe_lab.shell", __doc__)
    parser.add_argument("figure", choices=["fig3", "fig7"], help="the topology: Figure 3 or Figure 7")
    parser.add_argument("--strategy", default="robe-sim", help="the client's strategy (fig7: of its client proxy)")
    parser.add_argument("--loss", type=float, default=0.0, help="random loss on the default path, percent")
    parser.add_argument("--loss-direction", choices=["up", "down", "both"], default="up",
                        help="where the default path's loss applies")  # fmt: skip
    parser.add_argument("--rtt1", type=float, default=None,
                        help="RTT of the default path in ms (default: 20 for fig3, 40 (LTE) for fig7)")  # fmt: skip
    parser.add_argument("--rtt2", type=float, default=None,
                        help="RTT of the second path in ms (default: 20 for fig3, 20 (DSL) for fig7)")  # fmt: skip
    parser.add_argument("--rate", type=float, default=10.0, help="rate of both paths, Mbit/s")
    parser.add_argument("--internet-rtt", type=float, default=10.0, help="fig7: RTT of the HAAP's internet leg, ms")
    parser.add_argument("--site", default="google.com", help="fig7: the replayed site (corpus/sites.toml)")
    parser.add_argument("--corpus", default="har", choices=["har", "mahimahi", "synthetic"], help="fig7: its corpus")
    parser.add_argument("--cli", action="store_true", help="open Mininet's CLI instead of a shell in the client")
    parser.add_argument("--command", default=None, help="run this command in the client's shell, then tear down")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Build, open the shell or CLI, tear down; exit status of the shell (2: could not build)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rtt1 is None:
        args.rtt1 = 20.0 if args.figure == "fig3" else 40.0
    if args.rtt2 is None:
        args.rtt2 = 20.0
    from experiments.profile import KNOWN_STRATEGIES
    from experiments.profile2 import EXPERIMENT2_STRATEGIES

    known = EXPERIMENT2_STRATEGIES if args.figure == "fig7" else KNOWN_STRATEGIES
    if args.strategy not in known:
        parser.error(f"--strategy={args.strategy!r}: unknown for {args.figure} (known: {', '.join(known)})")
    if os.geteuid() != 0:
        print("robe-lab shell: needs root (network namespaces): run 'sudo robe-lab shell ...'", file=sys.stderr)
        return 2
    from experiments.lifecycle import EXPECTED_FAILURES, run_guarded

    def body() -> int:
        started = time.monotonic()
        session_of = fig3_session if args.figure == "fig3" else fig7_session
        with session_of(args) as session:
            print(f"robe-lab shell: {args.figure} up in {time.monotonic() - started:.1f} s", file=sys.stderr)
            status = mininet_cli(session) if args.cli else run_user_shell(session, args.command)
        print("robe-lab shell: the network was torn down", file=sys.stderr)
        return status

    return run_guarded(body, failures=(ShellError, *EXPECTED_FAILURES), prefix="robe-lab shell: ",
                       interrupted="interrupted; the network was torn down")  # fmt: skip


def roles(names: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """(role, node name) of a network's hosts, from its ``names`` (``tag`` is not a host)."""
    return tuple((role, name) for role, name in names.items() if role != "tag")


def cli_command(line: str, nodes: dict[str, str]) -> tuple[str, str] | None:
    """(node name, command) of a CLI line ``<role or node name> <command>``, None for any other line
    (pure). Mininet's own CLI cannot take our names: its parser stops a command word at the first
    ``-``, and every node name here carries the run's tag (``rl-o123-4f2a1c-client``)."""
    first, _, rest = line.strip().partition(" ")
    name = nodes.get(first, first)
    if name not in nodes.values() or not rest.strip():
        return None
    return name, rest.strip()


def cli_banner(session: Session) -> str:
    """What the CLI prints first: the nodes by role and the client's variables."""
    nodes = ", ".join(f"{role} ({name})" for role, name in session.nodes)
    exported = " ".join(f"${key}" for key, _ in session.exports)
    return (f"Mininet's CLI on {session.run_tag}: nodes {nodes}; a line '<node> <command>' runs the command "
            f"in the node's shell (e.g. 'client ip -br addr'); the client's shell has {exported}"
            f"{' (fig7: prefix $ROBE_RESOLVER for the private resolver)' if 'ROBE_RESOLVER' in exported else ''}. "
            "exit (or Ctrl-D) tears the network down.")  # fmt: skip


def mininet_cli(session: Session) -> int:
    """Mininet's CLI on the running network, reading its commands from standard input (a terminal or
    a pipe); nodes are named by role (``client ping -c 1 198.18.3.1``) as well as by their names."""
    from mininet.cli import CLI

    nodes = dict(session.nodes)
    client = session.mininet[nodes["client"]]
    for key, value in session.exports:
        client.cmd(f"export {key}={shlex.quote(value)}")

    class RoleCLI(CLI):  # type: ignore[misc]
        prompt = "robe-lab> "

        def default(self, line: str) -> None:
            command = cli_command(line, nodes)
            if command is None:
                super().default(line)
                return
            node = self.mn[command[0]]
            node.sendCmd(command[1])
            self.waitForNode(node)

    from mininet.log import lg

    print(cli_banner(session), file=sys.stderr, flush=True)
    # The nodes' output goes where a command's output belongs (stdout, so that a script can read
    # it); Mininet's own log stays on stderr.
    stream = lg.ch.setStream(sys.stdout)
    try:
        RoleCLI(session.mininet, stdin=sys.stdin)
    finally:
        lg.ch.setStream(stream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
