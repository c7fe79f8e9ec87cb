"""The `xlb` command line without a kernel: parsing, errors, target resolution,
daemon detection, rate arithmetic, and the metrics module's pure parts."""

from __future__ import annotations

import argparse
import fcntl
import os
from pathlib import Path
from typing import Any

import pytest

from xlb import cli
from xlb.cli import common, show
from xlb.metrics import _health_metrics, parse_address
from xlb.model import Vip, VipFlags


def parse(*argv: str) -> argparse.Namespace:
    return cli.build_parser().parse_args(list(argv))


# --------------------------------------------------------------- parsing


def test_verbs_parse_into_typed_values() -> None:
    args = parse("vip", "add", "[fd00::1]:53/udp", "--flags", "no_sport,gue", "-i", "eth0")
    assert args.vip == Vip("fd00::1", 53, "udp")
    assert args.flags == VipFlags.NO_SPORT | VipFlags.GUE
    assert args.interface == "eth0" and args.pin_dir is None
    args = parse("real", "edit", "10.0.0.1:80/tcp", "10.1.0.1", "--weight", "0", "--pin-dir", "/x")
    assert str(args.real) == "10.1.0.1" and args.weight == 0 and args.pin_dir == Path("/x")
    assert parse("vip", "edit", "10.0.0.1:80", "--flags", "none").flags == VipFlags.NONE
    assert parse("list", "-n", "--rate", "--interval", "0.5").interval == 0.5
    args = parse("real-setup", "--vip", "10.100.0.1", "--vip", "10.100.0.2:80/tcp")
    assert [str(v) for v in args.vip] == ["10.100.0.1", "10.100.0.2"]
    assert parse("flows").vip is None and parse("flows", "--limit", "5").limit == 5
    assert parse("vip", "add", "10.101.0.0/24:80/tcp").vip == Vip("10.101.0.0/24", 80)
    assert parse("flows", "[fd00:101::/64]:0/udp").vip == Vip("fd00:101::/64", 0, "udp")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["vip", "add", "10.0.0.1:80/icmp"], "invalid VIP protocol"),
        (["vip", "add", "300.0.0.1:80/tcp"], "invalid VIP address"),
        (["vip", "add", "10.0.0.1:65536/tcp"], "invalid VIP port 65536"),
        (["vip", "add", "10.101.0.1/24:80/tcp"], "host bits are set (the prefix is 10.101.0.0/24)"),
        (["vip", "add", "127.0.0.0/8:80/tcp"], "it holds loopback addresses"),
        (["real-setup", "--vip", "10.101.0.0/24"], "10.101.0.0/24 is a prefix: real-setup puts"),
        (["real-setup", "--vip", "10.101.0.0/24:80/tcp"], "10.101.0.0/24 is a prefix"),
        (["real", "add", "10.0.0.1:80/tcp", "nope"], "invalid real address 'nope'"),
        (["real", "add", "10.0.0.1:80/tcp", "10.1.0.1", "--weight", "1.5"], "invalid weight"),
        (["real", "add", "10.0.0.1:80/tcp", "10.1.0.1", "--mac", "zz"], "invalid MAC"),
        (["stats", "--interval", "0"], "invalid interval"),
        (["flows", "--limit", "0"], "invalid count"),
        (["list", "--stats", "--rate"], "not allowed with argument"),
        ([], "required"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("xlb: error: "), err
    assert needle in err


def test_every_verb_has_an_epilog_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for verb in ("list", "vip", "real", "save", "apply", "stats", "counters", "flows"):
        with pytest.raises(SystemExit) as exc:
            cli.main([verb, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "examples:" in out and f"xlb {verb}" in out and "--interface" in out


# ---------------------------------------------------------------- target


def ns(**kw: Any) -> argparse.Namespace:
    base = {"interface": None, "pin_dir": None, "lock_dir": Path("/run/xlb")}
    return argparse.Namespace(**{**base, **kw})


def test_target_is_the_only_pinned_interface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(common, "DEFAULT_PIN_ROOT", tmp_path)
    with pytest.raises(cli.CliError, match="no xlb data plane is pinned"):
        cli.resolve_target(ns())
    (tmp_path / "eth0").mkdir()
    (tmp_path / "eth0" / "vips").touch()
    (tmp_path / "junk").mkdir()  # not a data plane: no `vips` pin
    target = cli.resolve_target(ns())
    assert (target.interface, target.pin_dir) == ("eth0", tmp_path / "eth0")
    (tmp_path / "eth1").mkdir()
    (tmp_path / "eth1" / "vips").touch()
    with pytest.raises(cli.UsageError, match=r"several data planes are pinned \(eth0, eth1\)"):
        cli.resolve_target(ns())
    assert cli.resolve_target(ns(interface="eth1")).pin_dir == tmp_path / "eth1"
    with pytest.raises(cli.CliError, match=r"no xlb data plane on eth7 \(nothing pinned at"):
        cli.resolve_target(ns(interface="eth7"))
    custom = cli.resolve_target(ns(pin_dir=tmp_path / "eth0"))
    assert custom.interface == "eth0"  # named after its directory under the root


def test_daemon_is_found_from_its_flock_without_taking_it(tmp_path: Path) -> None:
    target = cli.Target("eth0", tmp_path, tmp_path)
    assert cli.daemon_pid(target) is None
    lock = tmp_path / "eth0.lock"
    lock.write_text("1\n")
    assert cli.daemon_pid(target) is None  # a stale file is no daemon
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert cli.daemon_pid(target) == os.getpid()
        with pytest.raises(cli.CliError, match=rf"pid {os.getpid()}\) manages eth0"):
            cli.refuse_if_daemon(target, "`xlb vip add`")
    finally:
        os.close(fd)
    assert cli.daemon_pid(target) is None


# ----------------------------------------------------------------- rates


def test_rates_come_from_two_snapshots() -> None:
    before = [
        {
            "vip": "v",
            "packets": 10,
            "bytes": 1000,
            "reals": [{"address": "r", "packets": 4, "bytes": 400}],
        }
    ]
    now: list[dict[str, Any]] = [
        {
            "vip": "v",
            "packets": 30,
            "bytes": 3000,
            "reals": [
                {"address": "r", "packets": 14, "bytes": 1400},
                {"address": "n", "packets": 5, "bytes": 50},
            ],
        }
    ]
    show._add_rates(now, before, 2.0)
    assert (now[0]["pps"], now[0]["bps"]) == (10.0, 8000.0)
    assert (now[0]["reals"][0]["pps"], now[0]["reals"][0]["bps"]) == (5.0, 4000.0)
    assert now[0]["reals"][1]["pps"] == 0.0  # new real: no earlier sample, no rate yet
    assert show.human(1234567) == "1.2M" and show.human(999) == "999"


# --------------------------------------------------------------- metrics


def test_metrics_address_parsing() -> None:
    assert parse_address("127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_address(":9100") == ("0.0.0.0", 9100)  # every address, as documented
    assert parse_address("[::]:9100") == ("::", 9100)
    assert parse_address("[::1]:0") == ("::1", 0)
    for bad in ("9100", "host:9100", "1.2.3.4:x", "1.2.3.4:70000"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_health_metrics_follow_the_service_health_shape() -> None:
    health = {
        "vips": {
            "10.0.0.1:80/tcp": {
                "healthy": False,
                "unhealthy_transitions": 2,
                "reals": {
                    "10.1.0.1": {"state": "down", "probes_ok": 1, "probes_failed": 3,
                                 "transitions_up": 0, "transitions_down": 1, "weight": 3},
                    "10.1.0.2": {"state": "unchecked", "weight": 1},
                },
            }
        },
        "service": {"reloads": 3},
        "probe_path": {"encap_v4": 12},
    }  # fmt: skip
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in _health_metrics(health)
        for s in family.samples
    }
    vip = ("vip", "10.0.0.1:80/tcp")
    assert samples[("xlb_vip_healthy", (vip,))] == 0
    assert samples[("xlb_vip_unhealthy_transitions_total", (vip,))] == 2
    assert samples[("xlb_real_up", (("real", "10.1.0.1"), vip))] == 0
    assert ("xlb_real_up", (("real", "10.1.0.2"), vip)) not in samples
    assert samples[("xlb_real_configured_weight", (("real", "10.1.0.1"), vip))] == 3
    assert samples[("xlb_real_configured_weight", (("real", "10.1.0.2"), vip))] == 1
    key = ("xlb_real_health_probes_total", (("real", "10.1.0.1"), ("result", "failed"), vip))
    assert samples[key] == 3
    assert samples[("xlb_service_events_total", (("event", "reloads"),))] == 3
    assert samples[("xlb_healthcheck_packets_total", (("outcome", "encap_v4"),))] == 12


def test_health_metrics_give_min_healthy_and_whether_the_file_runs() -> None:
    health = {
        "vips": {"10.0.0.1:80/tcp": {"healthy": True, "reals_up": 1, "min_healthy": 2}},
        "config": {"last_reload_ok": False, "loaded_time": 1700000000.5, "file_changed": True},
    }
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in _health_metrics(health)
        for s in family.samples
    }
    vip = ("vip", "10.0.0.1:80/tcp")
    assert samples[("xlb_vip_reals_up", (vip,))] == 1
    assert samples[("xlb_vip_min_healthy_reals", (vip,))] == 2
    assert samples[("xlb_config_last_reload_successful", ())] == 0
    assert samples[("xlb_config_last_reload_success_timestamp_seconds", ())] == 1700000000.5
    assert samples[("xlb_config_file_changed", ())] == 1
    health["config"] = {"last_reload_ok": True, "loaded_time": 1.0, "file_changed": False}
    names = {s.name: s.value for family in _health_metrics(health) for s in family.samples}
    assert names["xlb_config_last_reload_successful"] == 1
    assert names["xlb_config_file_changed"] == 0


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    import xlb

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"xlb {xlb.__version__}"


# ------------------------------------------------------- ipvsadm's habits


@pytest.mark.parametrize(
    ("argv", "connection", "stats", "rate", "service"),
    [
        (["-Ln"], False, False, False, None),
        (["-L", "-n"], False, False, False, None),
        (["-lnc"], True, False, False, None),
        (["--list", "--numeric", "--stats"], False, True, False, None),
        (["-Ln", "--rate", "-t", "10.0.0.1:80"], False, False, True, "10.0.0.1:80"),
    ],
)
def test_ipvsadm_list_forms_parse(
    argv: list[str], connection: bool, stats: bool, rate: bool, service: str | None
) -> None:
    assert cli.is_ipvsadm_list(argv) and not cli.is_ipvsadm_list(["list", *argv])
    args = cli.build_ipvsadm_parser().parse_args(argv)
    assert (args.connection, args.stats, args.rate, args.tcp_service) == (
        connection, stats, rate, service
    )  # fmt: skip


def test_ipvsadm_list_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["-Ln", "--stats", "-c"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("xlb: error: argument -c/--connection")


def test_large_numbers_shrink_as_ipvsadm_shrinks_them() -> None:
    from xlb.cli.ipvsadm import _large

    assert _large(99_999_999, exact=False) == " 99999999"
    assert _large(123_456_789, exact=False) == "  123456K"
    assert _large(12_345_678_901, exact=False) == "   12345M"
    assert _large(123_456_789_012_345, exact=False) == "     123T"
    assert _large(12_345_678_901, exact=True) == " 12345678901"
    assert _large(5, exact=True) == "        5"


@pytest.mark.parametrize("argv", [["import", "--help"], ["-L", "--help"], ["--help"]])
def test_import_and_list_have_help_with_examples(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and ("xlb -Ln" in out or "xlb import" in out)
