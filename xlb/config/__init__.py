"""The `xlb serve` configuration: a TOML file, its model, diffing and saving.

Three pure parts on one model, no I/O beyond reading the file (and the
calls that `apply` and `from_balancer` make on the balancer they are given):

- `schema`: the model, `Config` and its parts (`Settings`, `VipConfig`,
  `Check`, `BgpSettings`...), their defaults, and what follows from them.
- `reader`: `load(path)` / `loads(text)` turn TOML into a `Config`.
  Validation keeps going after the first problem and raises one
  `ConfigFileError` listing every issue with its location
  (`lb.toml: vip[1].reals[2].weight: ...`).
- `reconcile`: `diff(running, wanted)` compares two `DataPlaneState`s (what
  the balancer holds, what it should hold) and returns the ordered list of
  `Change`s that turn one into the other; `apply(balancer, changes)` runs
  them, transactionally per VIP.
- `writer`: `from_balancer(balancer)` and `dumps(config)` turn a running
  data plane back into a file that `load()` accepts (for `xlb save`).

The parts depend on `schema` and not on each other. Every public name is
importable from here: `from xlb.config import Config, load, diff`.

The schema is documented in docs/config.md.
"""

from ..model import (
    MAX_WEIGHT,  # the file's weight limit is the model's
    vip_sort_key,  # the order VIPs are listed in
)
from ..pins import DEFAULT_PIN_ROOT  # where pin_dir defaults to
from .reader import (
    AS_MAX,
    INTERFACE_RE,
    ConfigFileError,
    ConfigIssue,
    find_exabgp,
    load,
    loads,
    loads_bytes,
    parse_listen_address,
    read_bytes,
)
from .reconcile import (
    AddVip,
    ApplyFailure,
    Change,
    Configure,
    DataPlaneState,
    EmptyConfigError,
    RemoveVip,
    SetReals,
    SetSecondChance,
    SetVipFlags,
    VipState,
    apply,
    desired_state,
    diff,
    refuse_removing_every_vip,
    state_of_balancer,
)
from .schema import (
    ALL_DOWN,
    ANNOUNCERS,
    CHECK_TYPES,
    DEFAULT_BIRD_INCLUDE,
    DEFAULT_BIRD_SOCKET,
    DEFAULT_HOLD_TIME,
    DEFAULT_LOCK_DIR,
    DEFAULT_METRICS_ADDRESS,
    DEFAULT_MIN_HEALTHY,
    DEFAULT_PROBE_RULE_PRIORITY,
    DEFAULT_PROBE_TABLE,
    ENCAPSULATIONS,
    ON_FAILURE,
    RING_SIZE_DEFAULT,
    RING_SIZE_MAX,
    XDP_MODES,
    AllDown,
    AnnouncerKind,
    BgpSettings,
    Check,
    CheckTiming,
    CheckType,
    Config,
    Encapsulation,
    HealthSettings,
    Neighbor,
    OnFailure,
    RouteAttributes,
    Settings,
    VipConfig,
    XdpMode,
    balancer_config,
    effective_encapsulation,
    effective_flags,
    probe_destination,
    sort_reals,
)
from .writer import (
    dumps,
    from_balancer,
    toml_string,
    toml_value,
)

__all__ = [
    "ALL_DOWN",
    "ANNOUNCERS",
    "AS_MAX",
    "CHECK_TYPES",
    "DEFAULT_BIRD_INCLUDE",
    "DEFAULT_BIRD_SOCKET",
    "DEFAULT_HOLD_TIME",
    "DEFAULT_LOCK_DIR",
    "DEFAULT_METRICS_ADDRESS",
    "DEFAULT_MIN_HEALTHY",
    "DEFAULT_PIN_ROOT",
    "DEFAULT_PROBE_RULE_PRIORITY",
    "DEFAULT_PROBE_TABLE",
    "ENCAPSULATIONS",
    "INTERFACE_RE",
    "MAX_WEIGHT",
    "ON_FAILURE",
    "RING_SIZE_DEFAULT",
    "RING_SIZE_MAX",
    "XDP_MODES",
    "AddVip",
    "AllDown",
    "AnnouncerKind",
    "ApplyFailure",
    "BgpSettings",
    "Change",
    "Check",
    "CheckTiming",
    "CheckType",
    "Config",
    "ConfigFileError",
    "ConfigIssue",
    "Configure",
    "DataPlaneState",
    "EmptyConfigError",
    "Encapsulation",
    "HealthSettings",
    "Neighbor",
    "OnFailure",
    "RemoveVip",
    "RouteAttributes",
    "SetReals",
    "SetSecondChance",
    "SetVipFlags",
    "Settings",
    "VipConfig",
    "VipState",
    "XdpMode",
    "apply",
    "balancer_config",
    "desired_state",
    "diff",
    "dumps",
    "effective_encapsulation",
    "effective_flags",
    "find_exabgp",
    "from_balancer",
    "load",
    "loads",
    "loads_bytes",
    "parse_listen_address",
    "probe_destination",
    "read_bytes",
    "refuse_removing_every_vip",
    "sort_reals",
    "state_of_balancer",
    "toml_string",
    "toml_value",
    "vip_sort_key",
]
