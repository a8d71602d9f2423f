"""The client side of the origin replay server (see ``webreplay.server``): the command line that
starts the server process (``replay_server_command``), the corpus spec file it reads
(``corpus_spec_text`` writes one, ``parse_corpus_spec`` reads one), and one request over its control
socket (``control_request``).
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from webreplay.replay_config import TLS_VERSIONS, Listener, ReplayConfigError, ReplayControlError, ServerLimits


def control_request(path: Path | str, command: Mapping[str, Any], *, timeout: float = 10.0) -> dict[str, Any]:
    """Send one control command to a running server and return its answer (``ok`` true).

    Raises ReplayControlError when the server answers ``ok: false`` or cannot be reached.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            sock.sendall(json.dumps(dict(command)).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
        except OSError as err:
            raise ReplayControlError(f"control {str(path)!r}: {err}") from None
    try:
        answer = json.loads(data)
    except json.JSONDecodeError:
        raise ReplayControlError(f"control {str(path)!r}: bad answer {data[:200]!r}") from None
    if not isinstance(answer, dict) or not answer.get("ok"):
        error = answer.get("error") if isinstance(answer, dict) else answer
        raise ReplayControlError(f"control {command.get('cmd')!r}: {error}")
    return answer


def parse_corpus_spec(text: str, where: str = "corpus spec") -> list[tuple[str, str]]:
    """(corpus, site) pairs of a spec: a JSON list of ``{"corpus": C, "site": S}`` or ``[C, S]``."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReplayConfigError(f"{where}: not JSON ({err})") from None
    if not isinstance(data, list) or not data:
        raise ReplayConfigError(f"{where}: expected a non-empty JSON list of (corpus, site) pairs")
    pairs = []
    for i, item in enumerate(data):
        if isinstance(item, dict) and set(item) == {"corpus", "site"}:
            pair = (item["corpus"], item["site"])
        elif isinstance(item, list) and len(item) == 2:
            pair = (item[0], item[1])
        else:
            raise ReplayConfigError(f'{where}[{i}]={item!r}: expected {{"corpus": C, "site": S}} or [C, S]')
        if not all(isinstance(x, str) and x for x in pair):
            raise ReplayConfigError(f"{where}[{i}]={item!r}: corpus and site must be non-empty strings")
        pairs.append(pair)
    return pairs


def corpus_spec_text(pairs: Iterable[tuple[str, str]]) -> str:
    """The JSON text of a corpus spec listing ``pairs`` (the inverse of ``parse_corpus_spec``)."""
    return json.dumps([{"corpus": c, "site": s} for c, s in pairs], indent=1) + "\n"


def replay_server_command(
    corpus_spec: Path | str,
    control: Path | str,
    *,
    cert: Path | str | None,
    key: Path | str | None,
    listeners: Sequence[Listener] = (Listener("0.0.0.0", 80), Listener("0.0.0.0", 443, tls=True)),
    limits: ServerLimits | None = None,
    active: str | None = None,
    mptcp: bool = False,
    tls_max: str | None = None,
) -> list[str]:
    """Command line of the replay server process (run with this interpreter, PYTHONPATH = project).

    ``mptcp``: listen on MPTCP sockets (plain TCP clients fall back to TCP on them); ``tls_max``:
    the highest TLS version offered ("1.2" or "1.3"; None: the library's).
    """
    limits = limits or ServerLimits()
    argv = [sys.executable, "-m", "webreplay.server", "--corpus-spec", str(corpus_spec), "--control", str(control)]
    if cert is not None and key is not None:
        argv += ["--cert", str(cert), "--key", str(key)]
    elif any(listener.tls for listener in listeners):
        raise ReplayConfigError("cert/key: a TLS listener needs both")
    for listener in listeners:
        ip = f"[{listener.ip}]" if ":" in listener.ip else listener.ip
        argv += ["--listen-tls" if listener.tls else "--listen", f"{ip}:{listener.port}"]
    argv += [
        "--max-header-bytes", str(limits.max_header_bytes), "--max-body-bytes", str(limits.max_body_bytes),
        "--idle-timeout", f"{limits.idle_timeout_s:g}", "--handshake-timeout", f"{limits.handshake_timeout_s:g}",
        "--request-timeout", f"{limits.request_timeout_s:g}",
        "--max-connections", str(limits.max_connections), "--max-log-entries", str(limits.max_log_entries),
    ]  # fmt: skip
    if active is not None:
        argv += ["--active", active]
    if mptcp:
        argv.append("--mptcp")
    if tls_max is not None:
        if tls_max not in TLS_VERSIONS:
            raise ReplayConfigError(f"tls_max={tls_max!r}: must be one of {', '.join(TLS_VERSIONS)}")
        argv += ["--tls-max", tls_max]
    return argv
