"""The serve configuration: loading reports every error with its place; diff
is pure and ordered; apply is all-or-nothing per VIP; dumps round-trips."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from xlb import BalancerConfig, ConfigError, Real, Vip, VipFlags, XlbError
from xlb import config as cfg
from xlb.config import (
    AddVip,
    Check,
    CheckTiming,
    Config,
    ConfigFileError,
    Configure,
    DataPlaneState,
    RemoveVip,
    SetReals,
    SetSecondChance,
    SetVipFlags,
    VipConfig,
    VipState,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "config.md"

MINIMAL = """
[balancer]
interface = "eth0"
gateway_mac = "02:00:00:00:00:01"

[[vip]]
address = "10.100.0.1"
port = 80

[[vip.reals]]
address = "10.0.1.1"

[[vip.reals]]
address = "10.0.1.2"
weight = 2
"""


def issues_of(text: str) -> list[str]:
    with pytest.raises(ConfigFileError) as info:
        cfg.loads(text, source="lb.toml")
    return [str(issue) for issue in info.value.issues]


# ---------------------------------------------------------------- loading


def test_minimal_file_loads_with_defaults() -> None:
    config = cfg.loads(MINIMAL, source="lb.toml")
    assert config.settings.interface == "eth0"
    assert config.settings.xdp_mode == "native"
    (entry,) = config.vips
    assert entry.vip == Vip("10.100.0.1", 80, "tcp")
    assert entry.reals == (Real("10.0.1.1"), Real("10.0.1.2", weight=2))
    assert (entry.on_failure, entry.all_down, entry.check) == ("remove", "keep", None)
    assert entry.ring_size == 65537


def test_documented_example_loads() -> None:
    """The full example in docs/config.md is valid and uses every check type."""
    blocks = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), re.S)
    assert blocks, "docs/config.md has no toml example"
    config = cfg.loads(blocks[0], source="docs/config.md")
    assert {entry.check.type for entry in config.vips if entry.check} >= {
        "tcp",
        "http",
        "udp",
        "command",
    }
    assert config.settings.metrics == "127.0.0.1:9077"
    assert {entry.check.user for entry in config.vips if entry.check} >= {"nobody"}


def test_every_error_is_reported_with_its_location() -> None:
    text = """
[balancer]
interface = "eth0"
xdp_mode = "turbo"
mtu = 100
metrics = "nowhere"
gateway_mac = "02:00:00:00:00:01"
colour = "blue"

[[vip]]
address = "10.100.0.1"
port = 80

[[vip.reals]]
address = "10.0.1.1"

[[vip]]
address = "10.100.0.2"
port = 70000
protocol = "sctp"
ring_size = 65536
flags = ["no_sport", "dport_only"]

[[vip.reals]]
address = "10.0.1.1"

[[vip.reals]]
address = "10.0.1.300"

[[vip.reals]]
address = "10.0.1.3"
weight = -1

[vip.check]
type = "tcp"
path = "/healthz"
interval = 0.5
timeout = 2
"""
    assert issues_of(text) == [
        "lb.toml: balancer.xdp_mode: must be one of 'native', 'generic', not 'turbo'",
        "lb.toml: balancer.mtu: must be 0 (no check) or 576-65535, not 100",
        "lb.toml: balancer.metrics: must be HOST:PORT with an IP address (like 127.0.0.1:9077 "
        "or [::1]:9077), or :PORT for every IPv4 address, not 'nowhere'",
        "lb.toml: balancer.colour: unknown key",
        "lb.toml: vip[1].port: must be an integer 0-65535, not 70000",
        "lb.toml: vip[1].protocol: must be one of 'tcp', 'udp', not 'sctp'",
        "lb.toml: vip[1].flags: no_sport and dport_only exclude each other",
        "lb.toml: vip[1].ring_size: must be a prime number (like 65537 or 655373), not 65536",
        "lb.toml: vip[1].reals[1].address: '10.0.1.300' is not an IPv4 or IPv6 address",
        "lb.toml: vip[1].reals[2].weight: must be an integer 0-65535, not -1",
        "lb.toml: vip[1].check.path: not used by a 'tcp' check",
        "lb.toml: vip[1].check.timeout: must be <= interval (2 > 0.5)",
    ]


def test_a_bad_port_hides_no_other_error_of_its_vip() -> None:
    """The VIP cannot be built (bad address and port), yet its address, its
    reals and their rules are all still checked."""
    text = """
[[vip]]
address = "1.2.3.999"
port = -5

[[vip.reals]]
address = "10.0.1.300"

[[vip.reals]]
address = "10.0.1.1"

[[vip.reals]]
address = "10.0.1.1"
mac = "02:00:00:00:00:01"

[vip.check]
type = "udp"
"""
    assert issues_of(text) == [
        "lb.toml: vip[0].address: '1.2.3.999' is not an IPv4 or IPv6 address or prefix",
        "lb.toml: vip[0].port: must be an integer 0-65535, not -5",
        "lb.toml: vip[0].reals[0].address: '10.0.1.300' is not an IPv4 or IPv6 address",
        "lb.toml: vip[0].reals[1]: no next hop: set mac here, or balancer.gateway_mac, "
        "or balancer.fib_lookup = true",
        "lb.toml: vip[0].reals[2].address: 10.0.1.1 is already reals[1]",
        "lb.toml: vip[0].check.type: a udp check of a tcp VIP needs its own port",
    ]


def test_a_vip_without_a_check_is_valid_as_the_docs_say() -> None:
    """docs/config.md: [vip.check] is optional; inside it, `type` is required."""
    (entry,) = cfg.loads(MINIMAL).vips
    assert entry.check is None
    docs = DOCS.read_text()
    assert "`[vip.check]` is optional" in docs
    assert any("vip[0].check.type: is required" in i for i in issues_of(MINIMAL + "[vip.check]\n"))


def test_invalid_toml_is_one_error_with_line() -> None:
    (issue,) = issues_of("[balancer\ninterface = 1\n")
    assert issue.startswith("lb.toml: invalid TOML:") and "line 1" in issue


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('[[vip]]\naddress = "10.1.1.1"', "vip[0].port: is required"),
        ('[[vip]]\nport = 1\n[[vip.reals]]\naddress = "10.0.0.1"', "vip[0].address: is required"),
        ("[[vip]]\naddress = 5\nport = 1", "vip[0].address: must be a string, not an integer"),
        (
            '[[vip]]\naddress = "10.1.1.1"\nport = 1\nflags = ["fast"]',
            "vip[0].flags: unknown VIP flag 'fast'",
        ),
        (
            '[[vip]]\naddress = "10.1.1.1"\nport = 1\nflags = ["gue"]\nencapsulation = "ipip"',
            'vip[0].flags: flag "gue" contradicts encapsulation = "ipip"',
        ),
        (
            '[[vip]]\naddress = "10.1.1.1"\nport = 1\non_failure = "panic"',
            "vip[0].on_failure: must be one of 'remove', 'drain', not 'panic'",
        ),
        (
            '[[vip]]\naddress = "2001:db8::1"\nport = 1\n[[vip.reals]]\naddress = "10.0.0.1"',
            "vip[0].reals[0].address: IPv4 real for IPv6 VIP 2001:db8::1",
        ),
        (
            '[[vip]]\naddress = "10.1.1.1"\nport = 0\n[vip.check]\ntype = "tcp"',
            "vip[0].check.port: is required: the VIP has port 0",
        ),
        (
            '[[vip]]\naddress = "10.1.1.1"\nport = 1\n[vip.check]\ntype = "command"',
            'vip[0].check.command: is required for a "command" check',
        ),
        (
            '[[vip]]\naddress = "10.1.1.1"\nport = 1\n[vip.check]\ntype = "ping"',
            "vip[0].check.type: must be one of 'tcp', 'http', 'https', 'udp', 'command'",
        ),
        (
            '[[vip]]\naddress = "10.1.1.1"\nport = 1\n[vip.check]\ntype = "http"\n'
            "expect_status = [200, 999]",
            "vip[0].check.expect_status: must be an HTTP status (100-599)",
        ),
        ("[health]\nrise = 0", "health.rise: must be an integer 1-1000, not 0"),
        ("[health]\ninterval = -1", "health.interval: must be a number > 0"),
        ("vip = 3", "vip: must be an array of tables ([[vip]]), not an integer"),
        ('[balancer]\npin_dir = "relative"', "balancer.pin_dir: must be an absolute path"),
        (
            '[[vip]]\naddress = "10.1.1.1"\nport = 1\nsecond_chance = -1',
            "vip[0].second_chance: must be seconds: 0 (off), 0.001-2592000 or inf",
        ),
        (
            '[[vip]]\naddress = "10.1.1.1"\nport = 1\nsecond_chance = "1h"',
            "vip[0].second_chance: must be seconds",
        ),
        (
            '[[vip]]\naddress = "10.1.1.1"\nport = 1\nsecond_chance = 2678400',
            "vip[0].second_chance: must be seconds",
        ),
        ('[balancer]\nsrc_v4 = "::1"', "balancer.src_v4: must be an IPv4 address, not '::1'"),
    ],
)
def test_single_error_messages(snippet: str, expected: str) -> None:
    if "[balancer]" not in snippet:
        snippet += "\n[balancer]\nfib_lookup = true\n"  # a next hop for every real
    issues = issues_of(snippet)
    assert any(expected in issue for issue in issues), issues


def test_duplicates_and_missing_next_hop_are_errors() -> None:
    text = """
[[vip]]
address = "10.100.0.1"
port = 80
[[vip.reals]]
address = "10.0.1.1"
[[vip.reals]]
address = "10.0.1.1"
mac = "02:00:00:00:00:09"
[[vip]]
address = "10.100.0.1"
port = 80
"""
    assert issues_of(text) == [
        "lb.toml: vip[0].reals[0]: no next hop: set mac here, or balancer.gateway_mac, "
        "or balancer.fib_lookup = true",
        "lb.toml: vip[0].reals[1].address: 10.0.1.1 is already reals[0]",
        "lb.toml: vip[1]: VIP 10.100.0.1:80/tcp is already vip[0]",
    ]


def test_error_is_a_config_error_and_lists_issues_in_its_message() -> None:
    with pytest.raises(ConfigError) as info:
        cfg.loads("[balancer]\nmtu = 1\nxdp_mode = 2\n", source="lb.toml")
    assert isinstance(info.value, XlbError)
    assert str(info.value).splitlines() == [
        "2 errors in the configuration",
        "  lb.toml: balancer.xdp_mode: must be a string, not an integer",
        "  lb.toml: balancer.mtu: must be 0 (no check) or 576-65535, not 1",
    ]


def test_unreadable_file_is_a_config_file_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="cannot read"):
        cfg.load(tmp_path / "missing.toml")


def test_check_inherits_health_defaults_and_shrinks_timeout() -> None:
    text = MINIMAL + '[vip.check]\ntype = "http"\ninterval = 0.5\n'
    text = text.replace("[balancer]", "[health]\nrise = 5\ntimeout = 1.0\n\n[balancer]")
    (entry,) = cfg.loads(text).vips
    assert entry.check is not None
    assert entry.check.timing == CheckTiming(interval=0.5, timeout=0.5, rise=5, fall=3)


def test_gue_is_a_per_vip_flag_and_can_be_overridden_either_way() -> None:
    text = MINIMAL.replace("[balancer]", '[balancer]\nencapsulation = "gue"')
    text += '\n[[vip]]\naddress = "10.100.0.2"\nport = 80\nencapsulation = "ipip"\n'
    config = cfg.loads(text)
    state = cfg.desired_state(config)
    assert state.vips[Vip("10.100.0.1", 80)].flags == VipFlags.GUE
    assert state.vips[Vip("10.100.0.2", 80)].flags == VipFlags.NONE
    assert state.config is not None and not state.config.gue_all


# ---------------------------------------------------------------- diff

V1, V2, V3 = Vip("10.100.0.1", 80), Vip("10.100.0.2", 80), Vip("10.100.0.3", 53, "udp")
R1, R2, R3 = Real("10.0.1.1"), Real("10.0.1.2"), Real("10.0.1.3")


def state(**vips: VipState) -> DataPlaneState:
    by_name = {"v1": V1, "v2": V2, "v3": V3}
    return DataPlaneState({by_name[name]: value for name, value in vips.items()})


def vs(*reals: Real, flags: VipFlags = VipFlags.NONE, ring: int = 65537) -> VipState:
    return VipState(flags, ring, reals)


def test_equal_states_give_an_empty_diff() -> None:
    a = state(v1=vs(R1, R2), v2=vs(R3))
    b = state(v2=vs(R3), v1=vs(R2, R1))  # order of VIPs and reals does not matter
    assert cfg.diff(a, b) == []


def test_diff_orders_global_then_vips_by_address_then_removals() -> None:
    running = DataPlaneState({V3: vs(R1), V2: vs(R1)}, BalancerConfig())
    wanted = DataPlaneState(
        {V1: vs(R1, R2), V2: vs(R1, Real("10.0.1.2", 3), flags=VipFlags.NO_SPORT)},
        BalancerConfig(mtu=9000),
    )
    assert cfg.diff(running, wanted) == [
        Configure(BalancerConfig(mtu=9000)),
        AddVip(V1, VipFlags.NONE, 65537),
        SetReals(V1, (R1, R2)),
        SetVipFlags(V2, VipFlags.NO_SPORT),
        SetReals(V2, (R1, Real("10.0.1.2", 3))),
        RemoveVip(V3),
    ]


def test_diff_reweight_is_one_set_reals() -> None:
    changes = cfg.diff(state(v1=vs(R1, R2)), state(v1=vs(R1, Real("10.0.1.2", 0))))
    assert changes == [SetReals(V1, (R1, Real("10.0.1.2", 0)))]


def test_diff_ring_size_change_recreates_the_vip() -> None:
    changes = cfg.diff(state(v1=vs(R1)), state(v1=vs(R1, ring=13)))
    assert changes == [RemoveVip(V1), AddVip(V1, VipFlags.NONE, 13), SetReals(V1, (R1,))]


def test_diff_changes_the_second_chance_window_in_place() -> None:
    running = state(v1=vs(R1))
    wanted = state(v1=replace(vs(R1), second_chance=0.0))
    assert cfg.diff(running, wanted) == [SetSecondChance(V1, 0.0)]
    added = cfg.diff(state(), state(v1=replace(vs(R1), second_chance=math.inf)))
    assert added == [AddVip(V1, VipFlags.NONE, 65537, math.inf), SetReals(V1, (R1,))]
    assert str(added[0]).endswith("second_chance=inf")


def test_a_failing_vip_gets_its_window_back() -> None:
    lb = FakeBalancer()
    lb.state = {V1: replace(vs(R1), second_chance=60.0)}
    lb.max_reals = 1
    wanted = DataPlaneState({V1: replace(vs(R1, R2), second_chance=0.0)})
    failures = cfg.apply(lb, cfg.diff(cfg.state_of_balancer(lb), wanted))  # type: ignore[arg-type]
    assert [f.vip for f in failures] == [V1]
    assert lb.state[V1] == replace(vs(R1), second_chance=60.0)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("", 3600.0), ("second_chance = 0", 0.0), ("second_chance = 90", 90.0),
     ("second_chance = 0.5", 0.5), ("second_chance = inf", math.inf)],
)  # fmt: skip
def test_second_chance_is_read_and_written_back(text: str, seconds: float) -> None:
    config = cfg.loads(MINIMAL.replace("port = 80", f"port = 80\n{text}"))
    assert config.vips[0].second_chance == seconds
    again = cfg.loads(cfg.dumps(config))
    assert again.vips[0].second_chance == seconds
    assert cfg.desired_state(config).vips[V1].second_chance == seconds


def test_diff_without_wanted_global_config_leaves_it_alone() -> None:
    running = DataPlaneState({}, BalancerConfig(mtu=1400))
    assert cfg.diff(running, DataPlaneState({})) == []


def test_diff_accepts_configs_and_is_deterministic() -> None:
    config = cfg.loads(MINIMAL)
    first = cfg.diff(DataPlaneState({}), config)
    assert first == cfg.diff(DataPlaneState({}), config)
    assert [str(c) for c in first] == [
        "configure",
        "add vip 10.100.0.1:80/tcp flags=none ring_size=65537 second_chance=3600",
        "set reals 10.100.0.1:80/tcp 10.0.1.1*1 10.0.1.2*2",
    ]
    assert cfg.diff(cfg.desired_state(config), config) == []


# ---------------------------------------------------------------- apply


class FakeBalancer:
    """The part of Balancer that apply() uses, in memory; can fail on demand."""

    def __init__(self) -> None:
        self.config = BalancerConfig()
        self.state: dict[Vip, VipState] = {}
        self.max_reals = 1000

    def configure(self, config: BalancerConfig) -> None:
        self.config = config

    def vips(self) -> list[Vip]:
        return sorted(self.state, key=cfg.vip_sort_key)

    def vip_flags(self, vip: Vip) -> VipFlags:
        return self.state[vip].flags

    def ring_size(self, vip: Vip) -> int:
        return self.state[vip].ring_size

    def reals(self, vip: Vip) -> list[Real]:
        return list(self.state[vip].reals)

    def second_chance(self, vip: Vip) -> float:
        return self.state[vip].second_chance

    def add_vip(self, vip: Vip, flags: VipFlags, ring_size: int, second_chance: float) -> None:
        self.state[vip] = VipState(flags, ring_size, (), second_chance)

    def set_second_chance(self, vip: Vip, seconds: float) -> None:
        self.state[vip] = replace(self.state[vip], second_chance=seconds)

    def set_vip_flags(self, vip: Vip, flags: VipFlags) -> None:
        self.state[vip] = replace(self.state[vip], flags=flags)

    def set_reals(self, vip: Vip, reals: tuple[Real, ...]) -> None:
        if len(reals) > self.max_reals:
            raise XlbError(f"no room for the reals of {vip}")
        self.state[vip] = replace(self.state[vip], reals=cfg.sort_reals(reals))

    def remove_vip(self, vip: Vip) -> None:
        del self.state[vip]


def test_apply_reaches_the_wanted_state() -> None:
    lb = FakeBalancer()
    wanted = DataPlaneState({V1: vs(R1, R2), V3: vs(R3)}, BalancerConfig(mtu=1400))
    assert cfg.apply(lb, cfg.diff(cfg.state_of_balancer(lb), wanted)) == []  # type: ignore[arg-type]
    assert cfg.state_of_balancer(lb) == wanted  # type: ignore[arg-type]


def test_apply_undoes_a_failing_vip_and_goes_on_with_the_others() -> None:
    lb = FakeBalancer()
    lb.state = {V1: vs(R1), V2: vs(R1)}
    lb.max_reals = 1
    wanted = DataPlaneState({V1: vs(R2), V2: vs(R1, R2, flags=VipFlags.NO_SPORT), V3: vs(R1, R3)})
    failures = cfg.apply(lb, cfg.diff(cfg.state_of_balancer(lb), wanted))  # type: ignore[arg-type]
    assert [f.vip for f in failures] == [V2, V3]
    assert "no room" in str(failures[0])
    assert lb.state == {V1: vs(R2), V2: vs(R1)}  # V2 as before (flags too), V3 never added


# ---------------------------------------------------------------- saving


def full_config() -> Config:
    return cfg.loads(
        """
[balancer]
interface = "eth1"
xdp_mode = "generic"
fib_lookup = true
encapsulation = "gue"
gue_port = 7777
mtu = 9000
metrics = "[::1]:9100"
hash_seed = 7
udp_ttl = 30.5
syn_flood_threshold = 0

[health]
interval = 1.5
fall = 4

[[vip]]
address = "2001:db8::10"
port = 443
flags = ["no_sport"]
encapsulation = "ipip"
ring_size = 13
on_failure = "drain"
all_down = "drop"

[[vip.reals]]
address = "2001:db8:1::1"
weight = 0
mac = "02:00:00:00:00:0a"

[vip.check]
type = "https"
path = "/health?full=1"
host = "example.com"
expect_status = [200, 204]
expect_body = "ok \\"quoted\\"\\n"
tls_verify = true
rise = 1

[[vip]]
address = "10.100.0.3"
port = 53
protocol = "udp"

[vip.check]
type = "command"
command = ["/bin/sh", "-c", "dig @{vip} -p {port}"]
""",
        source="lb.toml",
    )


def test_dumps_round_trips() -> None:
    config = full_config()
    text = cfg.dumps(config)
    assert cfg.loads(text, source="lb.toml") == config


def test_dumps_of_defaults_round_trips() -> None:
    config = Config(vips=(VipConfig(V1, (Real("10.0.0.1", mac="02:00:00:00:00:01"),)),))
    assert cfg.loads(cfg.dumps(config)) == config


def test_from_balancer_keeps_checks_of_the_base_config() -> None:
    base = full_config()
    lb = FakeBalancer()
    lb.interface, lb.mode, lb.pin_dir = "eth1", "generic", None  # type: ignore[attr-defined]
    lb.configure(cfg.balancer_config(base.settings))
    cfg.apply(lb, cfg.diff(cfg.state_of_balancer(lb), base))  # type: ignore[arg-type]
    saved = cfg.from_balancer(lb, base)  # type: ignore[arg-type]
    assert cfg.loads(cfg.dumps(saved), source="lb.toml") == base


@pytest.mark.parametrize(
    ("text", "expected"),
    [("plain", '"plain"'), ('a"b\\c', '"a\\"b\\\\c"'), ("tab\tnl\n\x01", '"tab\\tnl\\n\\u0001"')],
)
def test_toml_strings_are_escaped(text: str, expected: str) -> None:
    assert cfg.toml_string(text) == expected
    import tomllib

    assert tomllib.loads(f"k = {expected}")["k"] == text


def test_check_model_defaults() -> None:
    check = Check("tcp")
    assert (check.port, check.via_vip, check.timing) == (None, True, CheckTiming())


# ------------------------------------------------- metrics, users, no VIPs


def test_metrics_are_served_on_a_default_port_unless_turned_off() -> None:
    assert cfg.loads(MINIMAL).settings.metrics == cfg.DEFAULT_METRICS_ADDRESS == "127.0.0.1:9077"
    off = MINIMAL.replace("[balancer]", "[balancer]\nmetrics = false")
    assert cfg.loads(off).settings.metrics is None
    assert cfg.loads(cfg.dumps(cfg.loads(off))).settings.metrics is None  # round trip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (":9077", ("0.0.0.0", 9077)),  # every IPv4 address, as documented
        ("[::]:9077", ("::", 9077)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:9077", ("localhost", 9077)),
        ("10.0.0.1:9077", ("10.0.0.1", 9077)),
    ],
)
def test_metrics_addresses_the_docs_name_are_accepted(text: str, expected: tuple[str, int]) -> None:
    assert cfg.parse_listen_address(text) == expected
    loaded = cfg.loads(MINIMAL.replace("[balancer]", f'[balancer]\nmetrics = "{text}"'))
    assert loaded.settings.metrics == text


@pytest.mark.parametrize("text", ["nowhere", ":", "1.2.3.4:99999", "example.com:9077", "::1:9077"])
def test_bad_metrics_addresses_are_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="must be HOST:PORT"):
        cfg.parse_listen_address(text)
    snippet = MINIMAL.replace("[balancer]", f'[balancer]\nmetrics = "{text}"')
    assert any("balancer.metrics: must be HOST:PORT" in issue for issue in issues_of(snippet))


def test_a_command_check_may_name_a_user_that_exists() -> None:
    check = '[vip.check]\ntype = "command"\ncommand = ["true"]\n'
    (entry,) = cfg.loads(MINIMAL + check + 'user = "nobody"\n').vips
    assert entry.check is not None and entry.check.user == "nobody"
    assert cfg.loads(cfg.dumps(cfg.loads(MINIMAL + check + 'user = "nobody"\n'))).vips == (entry,)
    assert issues_of(MINIMAL + check + 'user = "no-such-user-xlb"\n') == [
        "lb.toml: vip[0].check.user: no user 'no-such-user-xlb' on this host"
    ]
    http = '[vip.check]\ntype = "http"\nuser = "nobody"\n'
    assert issues_of(MINIMAL + http) == ["lb.toml: vip[0].check.user: not used by a 'http' check"]


def test_vips_empty_array_says_no_vips_on_purpose() -> None:
    empty = cfg.loads('vips = []\n[balancer]\ninterface = "eth0"\n')
    assert empty.vips == () and empty.empty_on_purpose
    assert not cfg.loads('[balancer]\ninterface = "eth0"\n').empty_on_purpose
    assert cfg.loads(cfg.dumps(empty)) == replace(empty, source="<config>")
    assert issues_of("vips = [1]\n") == [
        "lb.toml: vips: may only be `vips = []` (no VIPs, on purpose); VIPs are [[vip]] tables"
    ]
    assert issues_of("vips = []\n" + MINIMAL) == [
        "lb.toml: vips: says there are no VIPs, but the file has 1 [[vip]] tables"
    ]


def test_removing_every_vip_is_refused_unless_it_is_said() -> None:
    running = [V1, V2]
    truncated = cfg.loads("", source="lb.toml")
    with pytest.raises(cfg.EmptyConfigError) as info:
        cfg.refuse_removing_every_vip(running, truncated, how_to_allow="pass --allow-empty")
    assert isinstance(info.value, ConfigError)
    assert str(info.value) == (
        "lb.toml has no VIPs: it would remove all 2 running VIP(s); an empty or truncated "
        "file? To mean it, write `vips = []` in it or pass --allow-empty"
    )
    cfg.refuse_removing_every_vip(running, truncated, allowed=True)
    cfg.refuse_removing_every_vip(running, cfg.loads("vips = []"))
    cfg.refuse_removing_every_vip([], truncated)  # nothing runs: nothing to lose
    cfg.refuse_removing_every_vip(running, cfg.loads(MINIMAL))  # some VIPs stay


def test_an_empty_data_plane_saved_applies_back_without_refusal() -> None:
    lb = FakeBalancer()
    lb.interface, lb.mode, lb.pin_dir = "eth1", "generic", None  # type: ignore[attr-defined]
    saved = cfg.from_balancer(lb)  # type: ignore[arg-type]
    assert saved.empty_on_purpose
    assert cfg.dumps(saved).startswith("vips = []\n")


def test_a_udp_ttl_beyond_the_data_plane_clock_is_a_located_error() -> None:
    """udp_ttl is stored as u64 nanoseconds: 1e30 s cannot be, and says where."""
    text = '[balancer]\ngateway_mac = "02:00:00:00:00:01"\nudp_ttl = 1e30\n'
    with pytest.raises(ConfigFileError) as exc:
        cfg.loads(text)
    assert "balancer.udp_ttl" in str(exc.value)


def test_a_ring_smaller_than_its_serving_reals_is_a_located_error() -> None:
    reals = "".join(f'[[vip.reals]]\naddress = "10.0.0.{i}"\n' for i in range(1, 6))
    text = (
        '[balancer]\ngateway_mac = "02:00:00:00:00:01"\n'
        f'[[vip]]\naddress = "10.100.0.1"\nport = 80\nring_size = 3\n{reals}'
    )
    with pytest.raises(ConfigFileError) as exc:
        cfg.loads(text)
    assert "vip[0].ring_size" in str(exc.value) and "smaller than the 5" in str(exc.value)


def test_syn_flood_threshold_reaches_the_data_plane_config_and_is_checked() -> None:
    """0 turns the guard off; a negative or fractional rate is a located error."""
    text = '[balancer]\ngateway_mac = "02:00:00:00:00:01"\nsyn_flood_threshold = 0\n'
    assert cfg.balancer_config(cfg.loads(text).settings).syn_flood_threshold == 0
    assert cfg.loads(MINIMAL).settings.syn_flood_threshold == 1000
    for bad in ("-1", "1.5", "4294967296"):
        with pytest.raises(ConfigFileError) as exc:
            cfg.loads(text.replace("= 0", f"= {bad}"))
        assert "balancer.syn_flood_threshold" in str(exc.value)


PREFIXES = """
[balancer]
gateway_mac = "02:00:00:00:00:01"

[[vip]]
address = "10.101.0.0/24"
port = 80

[[vip.reals]]
address = "10.0.1.1"

[[vip]]
address = "2001:db8:101::/64"
port = 0
protocol = "udp"

[[vip.reals]]
address = "2001:db8:1::1"
"""


def test_prefix_vips_are_read_and_written_back() -> None:
    config = cfg.loads(PREFIXES)
    assert [str(e.vip) for e in config.vips] == [
        "10.101.0.0/24:80/tcp",
        "[2001:db8:101::/64]:0/udp",
    ]
    assert 'address = "10.101.0.0/24"' in cfg.dumps(config)
    assert cfg.loads(cfg.dumps(config)) == config
    # a check probes the prefix's first host
    assert str(cfg.probe_destination(config.vips[0])[0]) == "10.101.0.1"


@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("10.101.0.1/24", "vip[0].address: '10.101.0.1/24': host bits are set (the prefix is"),
        ("10.101.0.0/40", "vip[0].address: '10.101.0.0/40': expected an IPv4 or IPv6 prefix"),
        ("127.0.0.0/8", "it holds loopback addresses"),
    ],
)
def test_bad_vip_prefixes_are_located_errors(address: str, message: str) -> None:
    with pytest.raises(ConfigFileError) as exc:
        cfg.loads(PREFIXES.replace('"10.101.0.0/24"', f'"{address}"', 1))
    assert message in str(exc.value)


def test_overlapping_prefix_vips_are_a_located_error() -> None:
    text = PREFIXES + '\n[[vip]]\naddress = "10.101.0.128/25"\nport = 80\n'
    text += '[[vip.reals]]\naddress = "10.0.1.2"\n'
    with pytest.raises(ConfigFileError) as exc:
        cfg.loads(text)
    assert "vip[2].address: prefix 10.101.0.128/25 overlaps vip[0] (10.101.0.0/24:80/tcp)" in str(
        exc.value
    )
    # another port, or an exact VIP inside: fine
    cfg.loads(
        text.replace(
            'port = 80\n[[vip.reals]]\naddress = "10.0.1.2"',
            'port = 81\n[[vip.reals]]\naddress = "10.0.1.2"',
        )
    )
    cfg.loads(text.replace('"10.101.0.128/25"', '"10.101.0.130"'))
