"""What the daemon reports about its configuration without running: the
minimum of healthy reals per VIP and whether the file on disk is the one
it runs (the metrics behind the dashboard and the alert rules)."""

from __future__ import annotations

import os
from pathlib import Path

from xlb.service import EVENTS_FROM_ZERO, Service

BASE = """
[balancer]
interface = "eth0"
gateway_mac = "02:00:00:00:00:01"
{bgp}
[[vip]]
address = "10.100.0.1"
port = 80

[[vip.reals]]
address = "10.0.1.1"
"""

BGP = """
[bgp]
local_as = 65001
router_id = "10.0.0.1"
min_healthy = 3

[[bgp.neighbors]]
address = "10.0.0.254"
as = 65000
"""


def test_min_healthy_is_one_without_bgp_and_the_bgp_setting_with_it(tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    path.write_text(BASE.format(bgp=""))
    (vip,) = Service(path).health().values()
    assert vip["min_healthy"] == 1
    path.write_text(BASE.format(bgp=BGP))
    (vip,) = Service(path).health().values()
    assert vip["min_healthy"] == 3


def test_an_edit_not_yet_reloaded_shows_until_the_bytes_are_the_same_again(
    tmp_path: Path,
) -> None:
    path = tmp_path / "lb.toml"
    path.write_text(BASE.format(bgp=""))
    svc = Service(path)
    state = svc.config_state()
    assert state["last_reload_ok"] and not state["file_changed"]
    assert state["loaded_time"] > 0
    path.write_text(BASE.format(bgp="").replace("10.0.1.1", "10.0.1.2"))
    assert svc.config_state()["file_changed"]
    path.write_text(BASE.format(bgp=""))  # put back: nothing to reload
    os.utime(path, ns=(1, 1))  # and a stat that differs from the one read
    assert not svc.config_state()["file_changed"]


def test_the_events_an_alert_watches_exist_from_the_start(tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    path.write_text(BASE.format(bgp=""))
    counters = Service(path).metrics()["service"]
    assert {name: counters[name] for name in EVENTS_FROM_ZERO} == dict.fromkeys(EVENTS_FROM_ZERO, 0)
