"""Experiment 2 sweeps declared as data: TOML profiles -> a validated dataclass -> ordered page loads.

A profile names the corpus and its sites, the strategies of the client proxy, the repetitions and
order, and the Figure 7 network (access links, internet leg). Errors name the field and value.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from experiments.path_schedule import PathChange, PathState, ScheduleError, Timeline, declared_timeline, parse_changes
from experiments.profile import KNOWN_STRATEGIES, PathSpec, ProfileError, read_profile_toml
from experiments.runs_folder import ProfileIdentity, field_defaults
from robe.strategies import Kind, names
from robe_lab.paths import package_data
from robe_lab.typedconfig import ConfigError, bounds, build, did_you_mean
from topologies.fig3 import PathConfig
from topologies.fig7 import Fig7Config
from topologies.linkparams import LinkConfigError
from webreplay import synthetic
from webreplay.errors import CorpusError
from webreplay.siteindex import content_hash, list_sites, site_entry
from webreplay.synthetic import parse_name

PROFILE_DIR = package_data("experiments", "profiles")
CORPORA = ("har", "mahimahi", "synthetic")
#: Clients without the client proxy: wget straight to the origins, over plain TCP (``direct``: the
#: testbed's baseline) or with its own socket made MPTCP by ``mptcpize`` (``direct-mptcp``, as the
#: paper's kernel did; the origins then listen on MPTCP sockets).
DIRECT_STRATEGIES = ("direct", "direct-mptcp")
USERSPACE_STRATEGIES = names(Kind.USERSPACE)
#: A userspace strategy with the kernel's default scheduler at both ends: ``<strategy>+kernel-default``.
SCHEDULER_SUFFIX = "+kernel-default"
EXPERIMENT2_STRATEGIES = (*KNOWN_STRATEGIES, *DIRECT_STRATEGIES, *(u + SCHEDULER_SUFFIX for u in USERSPACE_STRATEGIES))
TLS_MAX = ("1.2", "1.3")
CONNECTION_REUSE = ("keep-alive", "per-object")
DNS_MODES = ("default-path", "local-cache")
#: The program that loads the pages: wget (the paper's) or headless Chromium (experiments/browser.py).
CLIENTS = ("wget", "chromium")


def split_strategy(label: str) -> tuple[str, str]:
    """A strategy label -> (strategy, userspace scheduler): ``mptcp-user+kernel-default`` ->
    (``mptcp-user``, ``kernel-default``); everything else uses ``lowest-rtt``."""
    if label.endswith(SCHEDULER_SUFFIX):
        return label.removesuffix(SCHEDULER_SUFFIX), "kernel-default"
    return label, "lowest-rtt"


@dataclass(frozen=True)
class Experiment2Profile:
    """A declared experiment 2 sweep: page loads of ``sites`` with each strategy."""

    name: str
    description: str
    corpus: str
    sites: tuple[str, ...]
    strategies: tuple[str, ...]
    repetitions: int = 30
    order: str = "random"
    seed: int = field(default=1, metadata=bounds(0, 2**32 - 1))
    load_timeout_s: float = 120.0
    internet_rtt_ms: float = 10.0
    tcp_syn_linear_timeouts: int | None = 0
    lte: PathSpec = field(default_factory=lambda: PathSpec(rtt_ms=40.0))
    dsl: PathSpec = field(default_factory=lambda: PathSpec(rtt_ms=20.0))
    # Ablation factors (issue 11); the defaults are the paper profile's conditions.
    tls_max: str = "1.3"  # highest TLS version the origins offer
    connection_reuse: str = "keep-alive"  # as wget does, or per-object (wget --no-http-keep-alive)
    dns: str = "default-path"  # lookups over the default path to the DNS server, or a local cache
    lte_backup: bool = False  # kernel scheduling: the client's LTE endpoint flagged backup
    # The page-load client (issue 12): wget, or headless Chromium; for Chromium, a gzip HAR is kept of
    # the first ``har_loads`` repetitions of each site and strategy.
    client: str = "wget"
    har_loads: int = 2
    # Paths that change over time (issue 14, ``experiments.path_schedule``; path 1 = LTE, the default
    # path, path 2 = DSL): with a schedule, each repetition runs ``duration_s`` seconds per strategy
    # with a page load due every ``interval_s`` (``experiments.timevarying2``).
    schedule: tuple[PathChange, ...] = ()
    duration_s: float | None = None
    interval_s: float | None = None

    def __post_init__(self) -> None:
        if self.corpus not in CORPORA:
            raise ProfileError(f"corpus={self.corpus!r}: must be one of {', '.join(CORPORA)}")
        if not self.sites or len(set(self.sites)) != len(self.sites):
            raise ProfileError(f"sites={list(self.sites)!r}: name one or more distinct sites")
        if not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise ProfileError(f"strategies={list(self.strategies)!r}: name one or more distinct strategies")
        for strategy in self.strategies:
            if strategy not in EXPERIMENT2_STRATEGIES:
                raise ProfileError(f"strategies: unknown strategy {strategy!r}"
                                   f"{did_you_mean(strategy, [*EXPERIMENT2_STRATEGIES])} "
                                   f"(known: {', '.join(EXPERIMENT2_STRATEGIES)})")  # fmt: skip
        for name, value, allowed in (("tls_max", self.tls_max, TLS_MAX),
                                     ("connection_reuse", self.connection_reuse, CONNECTION_REUSE),
                                     ("dns", self.dns, DNS_MODES)):  # fmt: skip
            if value not in allowed:
                raise ProfileError(f"{name}={value!r}: must be one of {', '.join(allowed)}")
        if self.client not in CLIENTS:
            raise ProfileError(f"client={self.client!r}: must be one of {', '.join(CLIENTS)}")
        if self.client != "wget":
            if "direct-mptcp" in self.strategies:
                raise ProfileError(f"strategies: direct-mptcp (mptcpize) is for wget only, not client={self.client!r}")
            if self.connection_reuse != "keep-alive":
                raise ProfileError(f"connection_reuse={self.connection_reuse!r}: a wget option; "
                                   f"client={self.client!r} reuses connections as it does")  # fmt: skip
        if isinstance(self.har_loads, bool) or not isinstance(self.har_loads, int) or self.har_loads < 0:
            raise ProfileError(f"har_loads={self.har_loads!r}: must be a whole number >= 0")
        if not isinstance(self.lte_backup, bool):
            raise ProfileError(f"lte_backup={self.lte_backup!r}: must be true or false")
        if isinstance(self.repetitions, bool) or not isinstance(self.repetitions, int) or self.repetitions < 1:
            raise ProfileError(f"repetitions={self.repetitions!r}: must be a whole number >= 1")
        if self.order not in ("random", "sequential"):
            raise ProfileError(f"order={self.order!r}: must be random or sequential")
        if not 1 <= self.load_timeout_s <= 3600:
            raise ProfileError(f"load_timeout_s={self.load_timeout_s!r}: must be within 1..3600")
        try:
            self.fig7_config(())
        except LinkConfigError as err:
            raise ProfileError(str(err)) from None
        try:
            timeline = self.timeline()
        except ScheduleError as err:
            raise ProfileError(str(err)) from None
        if timeline is not None:
            if self.client != "wget":
                raise ProfileError(f"client={self.client!r}: time-varying profiles load pages with wget")
            bad = [s for s in self.strategies if s not in names(Kind.KERNEL)]
            if bad:
                raise ProfileError(f"strategies: {bad[0]!r}: time-varying profiles run kernel strategies only "
                                   f"({', '.join(names(Kind.KERNEL))})")  # fmt: skip

    def timeline(self) -> Timeline | None:
        """The time-varying run of this profile (path 1 = LTE, path 2 = DSL), or None."""
        initial = (PathState(0.0, self.lte.rtt_ms), PathState(0.0, self.dsl.rtt_ms))
        return declared_timeline(self.schedule, self.duration_s, self.interval_s, initial)

    def path_config(self, path: int, state: PathState) -> PathConfig:
        """Access path ``path`` (1 LTE, 2 DSL) in a scheduled state; the loss applies both ways (a
        path that is down carries nothing, the SYN/ACKs included)."""
        spec = self.lte if path == 1 else self.dsl
        return PathConfig(rtt_ms=state.rtt_ms, rate_mbit=spec.rate_mbit, loss_pct=state.loss_pct,
                          loss_direction="both", queue_packets=spec.queue_packets)  # fmt: skip

    def fig7_config(self, origin_addresses: tuple[str, ...], seed: int | None = None) -> Fig7Config:
        """The Figure 7 network of this profile."""
        return Fig7Config(
            lte=PathConfig(rtt_ms=self.lte.rtt_ms, rate_mbit=self.lte.rate_mbit, queue_packets=self.lte.queue_packets),
            dsl=PathConfig(rtt_ms=self.dsl.rtt_ms, rate_mbit=self.dsl.rate_mbit, queue_packets=self.dsl.queue_packets),
            internet_rtt_ms=self.internet_rtt_ms,
            origin_addresses=origin_addresses,
            tcp_syn_linear_timeouts=self.tcp_syn_linear_timeouts,
            seed=self.seed if seed is None else seed,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (metadata); the schedule's fields only with a schedule, so that the profiles
        made before them keep their fingerprints."""
        values = asdict(self)
        if self.timeline() is None:
            for name in ("schedule", "duration_s", "interval_s"):
                del values[name]
        return values

    def corpus_hash(self) -> str:
        """Content hash of the recordings of the profile's sites (ProfileError if one is missing)."""
        try:
            if self.corpus == synthetic.CORPUS:  # generated pages: hash what the generator serves
                return synthetic.content_hash(self.sites)
            return content_hash(self.corpus, self.sites)
        except CorpusError as err:
            raise ProfileError(f"sites: {err}") from None

    def fingerprint(self) -> str:
        """Hash of everything that defines the loads' conditions, the corpus's content included (a
        resumed sweep must match it)."""
        return self.identity().fingerprint()

    def identity(self) -> ProfileIdentity:
        """The profile as a results folder's stored one is checked against (current fingerprint: with the
        corpus hash; older: without it)."""
        corpus = self.corpus_hash()

        def with_corpus(values: Mapping[str, Any]) -> str:
            return _digest({"profile": values, "corpus_sha256": corpus})

        return ProfileIdentity(self.to_dict(), field_defaults(Experiment2Profile), (with_corpus, _legacy_form))


def _digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _legacy_form(values: Mapping[str, Any]) -> str:
    """The fingerprint of the profile alone, as folders made before the corpus was hashed have it."""
    return _digest(values)


@dataclass(frozen=True)
class LoadSpec:
    """One page load of the sweep."""

    run_id: str
    site: str
    strategy: str
    repetition: int
    seed: int


def parse_profile2(data: dict[str, Any], source: str = "profile") -> Experiment2Profile:
    """Build a profile from parsed TOML: every field's type and range checked against the dataclass
    (``robe_lab.typedconfig``), then every site looked up in its corpus; errors name ``source``,
    the field and the value."""
    try:
        values = {"description": "", **data}
        if "schedule" in values:
            # Sorted by time, duplicates refused, errors naming the table's index (path_schedule).
            values["schedule"] = [asdict(change) for change in parse_changes(values["schedule"])]
        profile = build(Experiment2Profile, values)
        check_sites(profile)
    except (ProfileError, ConfigError, LinkConfigError, ScheduleError) as err:
        raise ProfileError(f"{source}: {err}") from None
    return profile


def check_sites(profile: Experiment2Profile) -> None:
    """Every site of the profile exists in its corpus (ProfileError with a did-you-mean otherwise),
    so a misspelt site stops the run before anything is created."""
    for index, name in enumerate(profile.sites):
        try:
            if profile.corpus == "synthetic":
                parse_name(name)
            else:
                site_entry(profile.corpus, name)
        except CorpusError as err:
            known = [] if profile.corpus == "synthetic" else list_sites(profile.corpus)
            hint = did_you_mean(name, known) if known else ""
            detail = f"known: {', '.join(known)}" if known else str(err)
            raise ProfileError(f"sites[{index}]={name!r}: no such {profile.corpus} site{hint} ({detail})") from None


def load_profile2(name_or_path: str) -> Experiment2Profile:
    """Load ``experiments/profiles/experiment2-<name>.toml`` or a profile file path."""
    return parse_profile2(*read_profile_toml(name_or_path, "experiment2"))


def expand_loads(profile: Experiment2Profile) -> list[LoadSpec]:
    """Every (site, strategy, repetition), interleaved in the profile's order, each with its seed."""
    loads = []
    for site in profile.sites:
        for strategy in profile.strategies:
            for rep in range(profile.repetitions):
                run_id = f"{site}-{strategy}-r{rep:02d}"
                seed = int.from_bytes(hashlib.sha256(f"{profile.seed}:{run_id}".encode()).digest()[:4], "big")
                loads.append(LoadSpec(run_id, site, strategy, rep, seed))
    if profile.order == "random":
        random.Random(profile.seed).shuffle(loads)
    return loads
