"""iptables REDIRECT rules of the client proxy: pure builders and install/remove ordering."""

from typing import Any

import pytest

from robe.proxy import redirect
from robe.proxy.client_proxy import ClientProxyConfig, ConfigError, build_parser, config_from_args, parse_sockaddr
from topologies.shell import CommandError


def test_install_commands_redirect_web_ports_and_exclude_the_haap():
    config = redirect.RedirectConfig(to_port=3129, exclude=("10.201.0.1",))
    assert redirect.install_commands(config) == [
        ["iptables", "-w", "-t", "nat", "-N", "rl-proxy-3129"],
        ["iptables", "-w", "-t", "nat", "-A", "rl-proxy-3129", "-d", "10.201.0.1", "-j", "RETURN"],
        ["iptables", "-w", "-t", "nat", "-A", "rl-proxy-3129", "-p", "tcp", "-d", "198.18.0.0/15",
         "-m", "multiport", "--dports", "80,443", "-j", "REDIRECT", "--to-ports", "3129"],
        ["iptables", "-w", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-j", "rl-proxy-3129"],
    ]  # fmt: skip


def test_the_exclusion_comes_before_the_redirect_and_remove_undoes_install():
    config = redirect.RedirectConfig(to_port=8080, networks=("198.18.0.0/15", "192.0.2.0/24"), ports=(80,),
                                     exclude=("198.18.9.9",))  # fmt: skip
    commands = redirect.install_commands(config)
    assert commands[1][-1] == "RETURN"
    assert [c[commands[2].index("-d") + 1] for c in commands[2:4]] == ["198.18.0.0/15", "192.0.2.0/24"]
    assert redirect.remove_commands(config) == [
        ["iptables", "-w", "-t", "nat", "-D", "OUTPUT", "-p", "tcp", "-j", "rl-proxy-8080"],
        ["iptables", "-w", "-t", "nat", "-F", "rl-proxy-8080"],
        ["iptables", "-w", "-t", "nat", "-X", "rl-proxy-8080"],
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"to_port": 0}, "to_port=0"),
        ({"to_port": 80, "networks": ()}, "networks=()"),
        ({"to_port": 80, "networks": ("2001:db8::/32",)}, "networks: '2001:db8::/32'"),
        ({"to_port": 80, "ports": (0,)}, "ports: 0"),
        ({"to_port": 80, "exclude": ("haap",)}, "exclude: 'haap'"),
    ],
)
def test_bad_redirect_settings_name_field_and_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        redirect.RedirectConfig(**kwargs)


def test_a_failed_install_removes_what_it_added():
    ran: list[list[str]] = []

    def runner(argv):
        ran.append(list(argv))
        if "REDIRECT" in argv:
            raise CommandError(argv, 1, "", "no REDIRECT target")

    config = redirect.RedirectConfig(to_port=3129)
    with pytest.raises(CommandError):
        redirect.install(config, runner)
    assert ran[-3:] == redirect.remove_commands(config)


def test_remove_runs_every_command_and_reports_failures():
    def runner(argv):
        if "-D" in argv:
            raise CommandError(argv, 1, "", "no such rule")

    failures = redirect.remove(redirect.RedirectConfig(to_port=3129), runner)
    assert len(failures) == 1 and "no such rule" in failures[0]


def test_parse_sockaddr_of_ipv4_and_ipv6():
    raw4 = (2).to_bytes(2, "little") + (443).to_bytes(2, "big") + bytes([198, 18, 200, 2]) + bytes(8)
    assert parse_sockaddr(raw4) == ("198.18.200.2", 443)
    raw6 = (10).to_bytes(2, "little") + (80).to_bytes(2, "big") + bytes(4) + bytes(15) + b"\x01" + bytes(4)
    assert parse_sockaddr(raw6) == ("::1", 80)
    with pytest.raises(ValueError, match="too short"):
        parse_sockaddr(b"\x02\x00")


def test_client_proxy_settings_are_validated_with_field_and_value():
    good: dict[str, Any] = {
        "listen_port": 3129,
        "haap": ("10.0.0.1", 8000),
        "strategy": "robe-sim",
        "sources": ("10.0.1.1",),
    }
    ClientProxyConfig(**good)
    changes: list[tuple[dict[str, Any], str]] = [
        ({"strategy": "quic"}, "strategy='quic'"),
        ({"sources": ()}, "sources=\\[\\]"),
        ({"sources": ("lte",)}, "'lte' is not an IPv4 address"),
        ({"strategy": "robe-downgrade"}, "haap_user=None"),
        ({"listen_port": 70000}, "listen_port=70000"),
        ({"timer_s": 0.0}, "timer_s=0.0"),
        ({"listen_addrs": ("localhost",)}, "listen_addrs: 'localhost'"),
    ]
    for change, message in changes:
        with pytest.raises(ConfigError, match=message):
            ClientProxyConfig(**{**good, **change})


def test_command_line_builds_the_redirect_excluding_the_haap():
    args = build_parser().parse_args(
        ["--listen-port", "3129", "--haap", "10.201.0.1:8000", "--haap-user", "10.201.0.1:8001", "--strategy",
         "robe-downgrade", "--source", "10.201.1.1", "--source", "10.201.2.1", "--iptables"]
    )  # fmt: skip
    config, rules = config_from_args(args)
    assert config.target == ("10.201.0.1", 8001)
    assert rules is not None and rules.exclude == ("10.201.0.1",) and rules.to_port == 3129
    with pytest.raises(ConfigError, match="haap='nowhere'"):
        config_from_args(build_parser().parse_args(["--listen-port", "1", "--haap", "nowhere", "--strategy", "tcp",
                                                    "--source", "10.0.0.1"]))  # fmt: skip
