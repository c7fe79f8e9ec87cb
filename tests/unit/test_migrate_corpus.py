"""`xlb import keepalived|ipvsadm` against a corpus of real-world-shaped sources.

tests/data/migrate/{keepalived,ipvsadm}/CASE/ holds a source
(keepalived.conf with what it includes, or `rules`, ipvsadm-save -n
output), optional `args` (more command-line options), and the expected
results: `expected.stderr` (every warning, note and error, with file and
line) and, for a source that imports, `expected.toml`. Each case runs the
real command line in-process from its directory.

Beyond the golden files, for every case that imports: each VIP, real and
weight the source names is in the output or named in a warning (read from
the source here with a scan of its own, not the importer's mapping), and
`xlb apply --dry-run` accepts the output. Error cases write nothing, even
with `-o FILE`.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import xlb.config as cfg
from xlb import cli
from xlb.errors import ConfigError
from xlb.migrate import FwmarkTarget, ImportOptions, SourceError, import_ipvsadm, import_keepalived
from xlb.migrate.kaconf import Statement, parse_file, parse_text
from xlb.migrate.source import Report

DATA = Path(__file__).resolve().parents[1] / "data" / "migrate"
CASES = sorted(DATA.glob("keepalived/*/")) + sorted(DATA.glob("ipvsadm/*/"))
SOURCE = {"keepalived": "keepalived.conf", "ipvsadm": "rules"}


def case_id(case: Path) -> str:
    return f"{case.parent.name}/{case.name}"


def run_import(
    case: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *extra: str
) -> tuple[int, str, str]:
    monkeypatch.chdir(case)
    kind = case.parent.name
    args = shlex.split((case / "args").read_text()) if (case / "args").exists() else []
    code = cli.main(["import", kind, SOURCE[kind], *args, *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_corpus_is_what_the_issue_asks_for() -> None:
    keepalived = [c for c in CASES if c.parent.name == "keepalived"]
    ipvsadm = [c for c in CASES if c.parent.name == "ipvsadm"]
    assert len(keepalived) >= 10 and len(ipvsadm) >= 3
    texts = "\n".join(p.read_text() for c in CASES for p in c.rglob("*") if p.is_file())
    needles = ("lb_kind DR", "lb_kind TUN", "-g -w", "-i -w", "HTTP_GET", "TCP_CHECK",
               "weight 0", "-w 0", "fwmark", "sorry_server", "include", "2001:db8")  # fmt: skip
    for needle in needles:
        assert needle in texts, needle
    rejected = [c for c in CASES if not (c / "expected.toml").exists()]
    assert {c.name for c in rejected} >= {"bad-unterminated", "bad-unknown-keyword",
                                          "bad-real-no-port", "bad"}  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case_matches_its_golden_files(
    case: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_import(case, capsys, monkeypatch)
    assert err == (case / "expected.stderr").read_text()
    expected = case / "expected.toml"
    if expected.exists():
        assert code == 0
        assert out == expected.read_text()
    else:
        assert code == 1 and out == ""
        lines = err.splitlines()
        assert lines[-1].startswith("xlb: error: ") and "nothing imported" in lines[-1]
        assert all(re.match(r"^[\w./-]+:\d+: error: ", line) for line in lines[:-1]), lines


# ------------------------------------------------- nothing silently dropped


@dataclass(frozen=True)
class SourceVip:
    address: str | None  # None: a firewall mark
    port: int
    mark: int | None
    reals: tuple[tuple[str, int], ...]  # (address, weight)
    line: int


def keepalived_vips(case: Path) -> Iterator[SourceVip]:
    """Every VIP and real the keepalived.conf names, from the syntax tree."""
    report = Report()
    statements, _ = parse_file(case / "keepalived.conf", report)
    groups = {s.args[0]: s for s in _walk(statements) if s.keyword == "virtual_server_group"}
    for vs in (s for s in _walk(statements) if s.keyword == "virtual_server"):
        block = vs.block or []
        default = next((int(s.args[0]) for s in block if s.keyword == "weight"), 1)
        reals = []
        for rs in (s for s in block if s.keyword == "real_server"):
            weights = [int(s.args[0]) for s in rs.block or [] if s.keyword == "weight"]
            reals.append((rs.args[0], weights[0] if weights else default))
        for address, port, mark in _endpoints(vs, groups):
            yield SourceVip(address, port, mark, tuple(reals), vs.where.line)


def _walk(statements: list[Statement]) -> Iterator[Statement]:
    for s in statements:
        yield s
        yield from _walk(s.block or [])


def _endpoints(
    vs: Statement, groups: dict[str, Statement]
) -> Iterator[tuple[str | None, int, int | None]]:
    if vs.args[0] == "fwmark":
        yield None, 0, int(vs.args[1])
    elif vs.args[0] == "group":
        for entry in groups[vs.args[1]].block or []:
            port = int(entry.args[0]) if entry.args else 0
            if entry.keyword == "fwmark":
                yield None, 0, port
            else:
                for address in _expand(entry.keyword):
                    yield address, port, None
    else:
        yield vs.args[0], int(vs.args[1]) if len(vs.args) > 1 else 0, None


def _expand(text: str) -> list[str]:
    """192.0.2.1-3, 2001:db8::a-b and 192.0.2.8/31, written out."""
    if "/" in text:
        return [str(a) for a in ipaddress.ip_network(text)]
    if "-" not in text:
        return [text]
    start, end = text.split("-")
    first = ipaddress.ip_address(start)
    base = int(first) & ~(0xFF if first.version == 4 else 0xFFFF)
    last = base | int(end, 10 if first.version == 4 else 16)
    return [str(ipaddress.ip_address(n) if first.version == 4 else ipaddress.IPv6Address(n))
            for n in range(int(first), last + 1)]  # fmt: skip


def ipvsadm_vips(case: Path) -> Iterator[SourceVip]:
    """Every service and real of the saved rules, by a scan of the lines."""
    services: dict[str, tuple[str | None, int, int | None, list[tuple[str, int]], int]] = {}
    for number, line in enumerate((case / "rules").read_text().splitlines(), start=1):
        words = line.split()
        if not words or words[0] not in ("-A", "-a", "--add-service", "--add-server"):
            continue
        key = words[2]
        if words[0] in ("-A", "--add-service"):
            if words[1] in ("-f", "--fwmark-service"):
                services[key] = (None, 0, int(key), [], number)
            else:
                host, _, port_text = key.rpartition(":")
                services[key] = (host.strip("[]"), int(port_text), None, [], number)
        else:
            real = (
                words[words.index("-r") + 1]
                if "-r" in words
                else words[words.index("--real-server") + 1]
            )
            host = real.rpartition(":")[0] if real.count(":") == 1 or real.startswith("[") else real
            option = "-w" if "-w" in words else "--weight"
            services[key][3].append((host.strip("[]"), int(words[words.index(option) + 1])))
    for address, port, mark, reals, number in services.values():
        yield SourceVip(address, port, mark, tuple(reals), number)


IMPORTING = [c for c in CASES if (c / "expected.toml").exists()]


@pytest.mark.parametrize("case", IMPORTING, ids=case_id)
def test_every_vip_real_and_weight_is_carried_over_or_named_in_a_warning(
    case: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, err = run_import(case, capsys, monkeypatch)
    assert code == 0
    config = cfg.loads(out)
    warnings = [line for line in err.splitlines() if ": warning: " in line]
    carried = {(str(v.vip.address), v.vip.port): v for v in config.vips}
    source = keepalived_vips(case) if case.parent.name == "keepalived" else ipvsadm_vips(case)
    checked = 0
    for vip in source:
        checked += 1
        if vip.mark is not None:
            named = [w for w in warnings if f"fwmark {vip.mark}" in w]
            mapped = (
                "--fwmark" in (case / "args").read_text() if (case / "args").exists() else False
            )
            assert named or mapped, (
                f"fwmark {vip.mark} (line {vip.line}) is neither imported nor named"
            )
            continue
        assert vip.address is not None
        entry = carried.get((str(ipaddress.ip_address(vip.address)), vip.port))
        if entry is None:
            assert any(_names_vip(w, vip) for w in warnings), f"{vip} left out without a warning"
            for address, weight in vip.reals:
                assert any(f"{address} (weight {weight})" in w for w in warnings), (address, weight)
            continue
        weights = {str(r.address): r.weight for r in entry.reals}
        for address, weight in vip.reals:
            normal = str(ipaddress.ip_address(address))
            if weights.get(normal) != weight:
                assert any(address in w for w in warnings), f"{vip}: {address} weight {weight}"
    assert checked


def _names_vip(warning: str, vip: SourceVip) -> bool:
    return vip.address is not None and (vip.address in warning or f"line {vip.line}" in warning
                                        or f":{vip.line}:" in warning)  # fmt: skip


@pytest.mark.parametrize("case", IMPORTING, ids=case_id)
def test_the_output_passes_apply_dry_run(
    case: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    output = tmp_path / "lb.toml"
    code, _, _ = run_import(case, capsys, monkeypatch, "-o", str(output))
    assert code == 0
    vips = len(cfg.load(output).vips)
    nowhere = tmp_path / "not-pinned"
    code = cli.main(["apply", str(output), "--dry-run", "--pin-dir", str(nowhere)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sum(line.startswith("+ add vip") for line in out.splitlines()) == vips
    assert "for a new data plane" in out


@pytest.mark.parametrize("case", [c for c in CASES if c not in IMPORTING], ids=case_id)
def test_a_rejected_source_writes_nothing(
    case: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    fresh, kept = tmp_path / "new.toml", tmp_path / "old.toml"
    kept.write_text("# the running configuration\n")
    for target in (fresh, kept):
        code, out, _ = run_import(case, capsys, monkeypatch, "-o", str(target))
        assert code == 1 and out == ""
    assert not fresh.exists()
    assert kept.read_text() == "# the running configuration\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.toml"]  # no temporary left


# ------------------------------------------------------------ the syntax


def statements(text: str) -> tuple[list[Statement], Report]:
    report = Report()
    return parse_text(text, "k.conf", report), report


def test_keepalived_syntax_quotes_comments_and_braces() -> None:
    parsed, report = statements(
        'a "one two" x"y z"w # comment\nb ! another\nc 1\n{\n  d { e 2 }\n}\nf \'{\' "}"\n'
    )
    assert not report.errors
    assert [(s.keyword, s.args) for s in parsed] == [
        ("a", ["one two", "xy zw"]), ("b", []), ("c", ["1"]), ("f", ["{", "}"])
    ]  # fmt: skip
    c = parsed[2]
    assert c.block is not None and c.block[0].keyword == "d"
    assert c.block[0].block is not None and c.block[0].block[0].args == ["2"]
    assert c.block[0].where.line == 5


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("a {\n b {\n }\n", 1, "unterminated block: `a {`"),
        ("a 1\n}\n", 2, "'}' without a block to close"),
        ("{\n}\n", 1, "'{' without a keyword"),
        ('a "open\n', 1, "unterminated quoted string"),
        ("a $NOPE\n", 1, "undefined parameter $NOPE"),
        ("@lb1 a 1\n", 1, "conditional configuration"),
        ("~SEQ(I, 1, 3)\n", 1, "~SEQ blocks are not read"),
        ("include /nonexistent/file.conf\n", 1, "no such file"),
        ("include a b\n", 1, "include takes one file name"),
    ],
)
def test_keepalived_syntax_errors_are_located(text: str, line: int, needle: str) -> None:
    _, report = statements(text)
    assert [e.where.line for e in report.errors if e.where] == [line], report.errors
    assert needle in report.errors[0].message


def test_parameters_are_substituted_and_includes_are_relative_to_their_file(
    tmp_path: Path,
) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "main.conf").write_text("$PORT=8080\ninclude sub/*.conf\n")
    (tmp_path / "sub" / "a.conf").write_text("include deeper/b.conf\nx ${PORT}\n")
    (tmp_path / "sub" / "deeper" / "b.conf").write_text("y $PORT z\n")
    report = Report()
    parsed, files = parse_file(tmp_path / "main.conf", report)
    assert not report.errors
    assert [(s.keyword, s.args, s.where.line) for s in parsed] == [
        ("y", ["8080", "z"], 1), ("x", ["8080"], 2)
    ]  # fmt: skip
    assert [Path(f).name for f in files] == ["main.conf", "a.conf", "b.conf"]
    assert parsed[0].where.file.endswith("sub/deeper/b.conf")


# ------------------------------------------------------------ options


DR = """
virtual_server 192.0.2.1 80 {
    lb_algo mh
    lb_kind DR
    quorum 4
    real_server 10.0.0.1 80 {
        weight 2
        TCP_CHECK {
        }
    }
    real_server 10.0.0.2 80 {
        weight 2
        TCP_CHECK {
        }
    }
}
"""


def test_options_set_interface_next_hop_base_and_quorum(tmp_path: Path) -> None:
    source = tmp_path / "keepalived.conf"
    source.write_text(DR)
    base = cfg.loads(
        '[balancer]\nxdp_mode = "generic"\nmtu = 1600\n\n[health]\nrise = 3\n\n'
        '[bgp]\nannouncer = "bird"\nlocal_as = 65001\nrouter_id = "10.0.0.9"\n'
    )
    result = import_keepalived(
        source, ImportOptions(interface="eth7", gateway_mac="02:00:00:00:00:09", base=base)
    )
    config = cfg.loads(result.text)
    assert config.settings.interface == "eth7" and config.settings.xdp_mode == "generic"
    assert config.settings.gateway_mac == "02:00:00:00:00:09" and not config.settings.fib_lookup
    assert config.settings.mtu == 1600 and config.health.timing.rise == 3
    assert config.bgp is not None and config.bgp.min_healthy == 2  # quorum 4 / weight 2
    assert any("bgp.min_healthy = 2" in str(n) for n in result.notes)
    check = config.vips[0].check
    assert check is not None and check.timing.rise == 1  # keepalived's, not the base's 3


def test_fwmark_targets_parse_and_refuse_nonsense() -> None:
    assert FwmarkTarget.parse("1=192.0.2.1") == FwmarkTarget(1, ipaddress.ip_address("192.0.2.1"))
    target = FwmarkTarget.parse("7=[2001:db8::1]:443/udp")
    assert (target.mark, str(target.address), target.port, target.protocol) == (
        7, "2001:db8::1", 443, "udp"
    )  # fmt: skip
    for bad in ("x=1.2.3.4", "1=nothing", "1=192.0.2.1:99999", "1=192.0.2.1:80/icmp", "1"):
        with pytest.raises(ConfigError):
            FwmarkTarget.parse(bad)


def test_strict_refuses_warnings_and_quiet_hides_notes(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    case = DATA / "keepalived" / "fwmark"
    code, out, err = run_import(case, capsys, monkeypatch, "--strict")
    assert code == 1 and out == "" and "--strict: nothing written" in err
    code, out, err = run_import(case, capsys, monkeypatch, "-q")
    assert code == 0 and out
    assert ": note: " not in err and err.count(": warning: ") == 3


def test_ipvsadm_reads_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    rules = (DATA / "ipvsadm" / "dr-v4" / "rules").read_text()
    monkeypatch.setattr("sys.stdin", io.StringIO(rules))
    assert cli.main(["import", "ipvsadm"]) == 0
    out, err = capsys.readouterr()
    assert len(cfg.loads(out).vips) == 3 and "<stdin>:1: note: " in err


def test_errors_are_all_collected_with_their_lines() -> None:
    with pytest.raises(SourceError) as failed:
        import_ipvsadm("-A -t 192.0.2.1:80\n-a -t 192.0.2.1:80 -r nohost:80\n-X\n", "r")
    assert [(i.where.line if i.where else None) for i in failed.value.issues] == [2, 3]
    assert "r:2: error: " in str(failed.value)


def test_the_writer_keeps_comments_out_of_the_model() -> None:
    config = cfg.loads(
        '[balancer]\nfib_lookup = true\n[[vip]]\naddress = "192.0.2.1"\nport = 80\n'
        '[[vip.reals]]\naddress = "10.0.0.1"\n'
    )
    text = cfg.dumps(config, header="line one\nline two", vip_comments={config.vips[0].vip: "x:1"})
    assert text.startswith("# line one\n# line two\n\n[balancer]\n")
    assert "\n# x:1\n[[vip]]\n" in text
    assert cfg.loads(text) == config


def test_a_missing_source_is_one_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli.main(["import", "keepalived", str(tmp_path / "nope.conf")]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [
        f"error: cannot read {tmp_path / 'nope.conf'}: No such file or directory",
        "xlb: error: 1 error: nothing imported",
    ]
