"""Figure 3 configuration validation and the per-namespace command builders."""

import pytest

from topologies.fig3 import (
    CLIENT_A1,
    CLIENT_A2,
    Fig3Config,
    PathConfig,
    client_routing_commands,
    mptcp_commands,
    sysctl_commands,
)
from topologies.linkparams import LinkConfigError


def test_defaults_match_the_paper():
    config = Fig3Config()
    assert config.path1.rtt_ms == config.path2.rtt_ms == 20
    assert config.path1.rate_mbit == 10
    assert config.congestion_control == "cubic"


def test_path_errors_name_the_path():
    with pytest.raises(LinkConfigError, match=r"path1\.loss_pct=120"):
        Fig3Config(path1=PathConfig(loss_pct=120))
    with pytest.raises(LinkConfigError, match=r"path2\.rtt_ms=-1"):
        Fig3Config(path2=PathConfig(rtt_ms=-1))
    with pytest.raises(LinkConfigError, match=r"path1\.loss_direction='left'"):
        Fig3Config(path1=PathConfig(loss_direction="left"))  # type: ignore[arg-type]


def test_other_fields_validated():
    with pytest.raises(LinkConfigError, match="congestion_control='cu bic'"):
        Fig3Config(congestion_control="cu bic")
    with pytest.raises(LinkConfigError, match="mptcp_subflows=0"):
        Fig3Config(mptcp_subflows=0)


def test_loss_goes_to_client_egress_by_default():
    params = PathConfig(loss_pct=30).link_params()
    assert params.a_to_b.loss_pct == 30 and params.b_to_a.loss_pct == 0


def test_sysctls_pin_cc_and_disable_blackhole_detection():
    flat = [" ".join(c) for c in sysctl_commands(Fig3Config(syn_retrans_before_tcp_fallback=128))]
    assert "sysctl -qw net.ipv4.tcp_congestion_control=cubic" in flat
    assert "sysctl -qw net.mptcp.blackhole_timeout=0" in flat
    assert "sysctl -qw net.mptcp.syn_retrans_before_tcp_fallback=128" in flat
    assert "sysctl -qw net.ipv4.ip_forward=0" in flat
    assert "sysctl -qw net.ipv4.ip_forward=1" in [" ".join(c) for c in sysctl_commands(Fig3Config(), forwarding=True)]


def test_policy_routing_per_source_address():
    flat = [" ".join(c) for c in client_routing_commands()]
    assert flat[0].startswith("ip route add default via 198.18.1.254 dev a1")
    assert f"ip rule add from {CLIENT_A1} table 101" in flat
    assert f"ip rule add from {CLIENT_A2} table 102" in flat


def test_mptcp_endpoints_only_on_client():
    client = [" ".join(c) for c in mptcp_commands(Fig3Config().mptcp_subflows, client=True)]
    server = [" ".join(c) for c in mptcp_commands(Fig3Config().mptcp_subflows, client=False)]
    assert f"ip mptcp endpoint add {CLIENT_A2} dev a2 id 2 subflow" in client
    assert not any("endpoint add" in c for c in server)
    assert "ip mptcp limits set subflow 2 add_addr_accepted 2" in server
