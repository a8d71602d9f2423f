"""The HAAP's destination policy: allow-list edge cases, its own addresses and ports, loud catch-alls."""

import ipaddress

import pytest

from robe.proxy.destinations import (
    DestinationPolicy,
    catch_all_warnings,
    embedded_ipv4,
    is_local_address,
    normalise_network,
)
from robe.proxy.haap import HaapConfig, parse_networks

CATCH_ALL = parse_networks(["0.0.0.0/0", "::/0"])


def _policy(allow, own_ports=(8000, 8001), local=()):
    local_set = {ipaddress.ip_address(a) for a in local}
    return DestinationPolicy(parse_networks(allow), own_ports, lambda a: a in local_set or is_local_address(a))


def _refused(policy, address, port=80):
    return policy.refusal(ipaddress.ip_address(address), port)


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("::ffff:127.0.0.1", "loopback, not explicitly allowed"),  # IPv4-mapped loopback
        ("::1", "loopback, not explicitly allowed"),
        ("127.0.0.1", "loopback, not explicitly allowed"),
        ("127.5.5.5", "loopback, not explicitly allowed"),
        ("64:ff9b::7f00:1", "NAT64 address of 127.0.0.1, refused"),  # well-known NAT64 prefix
        ("64:ff9b:1:7f00:0:100::", "NAT64 address of 127.0.0.1, refused"),  # local-use /48
        ("64:ff9b::a9fe:a9fe", "NAT64 address of 169.254.169.254, refused"),
        ("2002:7f00:1::1", "6to4 address of 127.0.0.1"),
        ("169.254.169.254", "link-local"),  # cloud metadata service
        ("fe80::1", "link-local"),
        ("::ffff:169.254.1.1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "'this network'"),
        ("::", "unspecified"),
        ("255.255.255.255", "limited broadcast"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("fec0::1", "site-local"),
    ],
)
def test_a_catch_all_still_refuses_loopback_special_and_translated_addresses(address, why):
    reason = _refused(_policy(["0.0.0.0/0", "::/0"]), address)
    assert reason is not None and why in reason, reason


def test_translated_addresses_pass_when_what_they_name_is_allowed():
    policy = _policy(["64:ff9b::/96", "198.18.0.0/15"])
    assert _refused(policy, "64:ff9b::c613:101") is None  # 198.19.1.1
    assert "NAT64 address of 10.0.0.1" in _refused(policy, "64:ff9b::a00:1")
    local_use = ipaddress.ip_address("64:ff9b:1:c613:1:100::")
    assert embedded_ipv4(local_use) == ("NAT64", ipaddress.ip_address("198.19.1.1"))


def test_network_and_broadcast_addresses_of_an_allowed_network_are_refused():
    policy = _policy(["198.18.0.0/15"])
    assert "network or broadcast address of 198.18.0.0/15" in _refused(policy, "198.18.0.0")
    assert "network or broadcast address of 198.18.0.0/15" in _refused(policy, "198.19.255.255")
    assert _refused(policy, "198.19.0.1") is None
    assert "outside the allowed networks (198.18.0.0/15)" in _refused(policy, "10.1.2.3")


def test_ipv4_mapped_entries_and_destinations_are_judged_as_ipv4():
    assert normalise_network(ipaddress.ip_network("::ffff:198.18.0.0/111")) == ipaddress.ip_network("198.18.0.0/15")
    policy = _policy(["::ffff:198.18.0.0/111"])
    assert policy.allow == (ipaddress.ip_network("198.18.0.0/15"),)
    assert _refused(policy, "::ffff:198.19.0.1") is None
    assert _refused(policy, "198.19.0.1") is None


def test_loopback_needs_an_entry_inside_loopback_and_the_haaps_own_ports_are_never_reached():
    policy = _policy(["127.0.0.0/8"])
    assert _refused(policy, "127.0.0.1", 5000) is None
    assert "the HAAP itself" in _refused(policy, "127.0.0.1", 8000)
    assert "the HAAP itself" in _refused(policy, "::ffff:127.0.0.2", 8001)
    assert "the HAAP itself" in _refused(_policy(["0.0.0.0/0"]), "127.0.0.1", 8001)
    assert _refused(_policy(["::1/128"]), "::1", 5000) is None


def test_the_hosts_own_addresses_need_a_host_entry():
    # 198.18.5.1 stands for an address of the HAAP's host (assigned there; here it is not).
    assert "the HAAP's own host" in _refused(_policy(["198.18.0.0/15"], local=["198.18.5.1"]), "198.18.5.1")
    assert "the HAAP itself" in _refused(_policy(["198.18.5.1/32"], local=["198.18.5.1"]), "198.18.5.1", 8000)
    assert _refused(_policy(["198.18.5.1/32"], local=["198.18.5.1"]), "198.18.5.1", 80) is None


def test_local_addresses_are_found_by_binding():
    assert is_local_address(ipaddress.ip_address("127.0.0.1"))
    assert is_local_address(ipaddress.ip_address("127.9.9.9"))  # the whole of 127/8 is local
    assert not is_local_address(ipaddress.ip_address("198.18.250.250"))


def test_a_catch_all_allow_list_is_warned_about_loudly():
    assert catch_all_warnings(parse_networks(["198.18.0.0/15"])) == []
    warnings = HaapConfig(port=1, allow=CATCH_ALL).warnings()
    assert len(warnings) == 2 and all("open proxy" in w and w.startswith("WARNING") for w in warnings)
    halves = catch_all_warnings(parse_networks(["0.0.0.0/1", "128.0.0.0/1", "198.18.0.0/15"]))
    assert len(halves) == 1 and "admits every IPv4" in halves[0]
    assert "at least half" in catch_all_warnings(parse_networks(["::/1"]))[0]
