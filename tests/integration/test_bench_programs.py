"""make bench's programs (experiments.bench_programs, run as modules in the hosts) on a real Figure 3
network: each transport carries the bytes sent, and the set-up figures come back."""

import pytest

from experiments.bench_transport import goodput, setups
from topologies.fig3 import Fig3Config, Fig3Network, PathConfig
from topologies.links import choose_backend

pytestmark = pytest.mark.root


def test_bench_programs_measure_goodput_and_setups():
    unshaped = PathConfig(rtt_ms=0, rate_mbit=None)
    with Fig3Network(Fig3Config(path1=unshaped, path2=unshaped), choose_backend()) as net:
        for transport in ("mptcp", "mptcp-user"):
            assert goodput(net, transport, 4) > 1.0, transport  # Mbit/s of 4 MiB; the sink counted them
        figures = setups(net, 10)
    assert figures["kernel_mptcp_cpu_ms_per_setup"] > 0
    assert figures["userspace_cpu_ms_per_setup"] > 0
    assert figures["userspace_rss_kib_per_idle_connection"] >= 0
