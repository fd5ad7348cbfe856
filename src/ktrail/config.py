"""The configuration file: which events, which paths, what to ignore.

    profile: default            # or full
    events:
      enable: [kill]            # on top of the profile
      disable: [utimes]
    watch: [/srv/secrets]       # more sensitive paths (opens reported)
    rules: [/etc/ktrail/local_rules.yaml]   # after the default rules
    ignore:                     # never reported
      pids: [1234]
      uids: [998]
      comms: [chronyd]
      paths: [/var/lib/prometheus]
    store:                      # the audit trail store (docs/store.md)
      path: /var/lib/ktrail/trail.db
      retain: 7d
      max_size: 1G
      enabled: true

Every mistake is reported as FILE:LINE:COLUMN with what was expected, and
nothing is started until the whole file is valid. The file is read with
bounds (safeyaml: size, nesting, aliases) and a key given twice is an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ktrail import safeyaml
from ktrail.loader.catalog import CATALOG
from ktrail.loader.ignore import Ignore
from ktrail.loader.profiles import PROFILES
from ktrail.store import MIN_STORE_BYTES
from ktrail.units import (
    ID_MAX,
    PID_MAX_LIMIT,
    SizeSyntaxError,
    TimeSyntaxError,
    parse_duration,
    parse_size,
)

DEFAULT_PATH = "/etc/ktrail/ktrail.yaml"


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class StoreConfig:
    path: str | None = None        # None: the default path
    retain: str | None = None      # as written; checked at parse time
    max_size: str | None = None
    enabled: bool = True


@dataclass(frozen=True)
class Config:
    profile: str = "default"
    enable: frozenset[str] = frozenset()
    disable: frozenset[str] = frozenset()
    watch: tuple[str, ...] = ()
    rules: tuple[str, ...] = ()
    ignore: Ignore = field(default_factory=Ignore)
    store: StoreConfig = field(default_factory=StoreConfig)
    source: str | None = None

    def events(self) -> frozenset[str]:
        return (PROFILES[self.profile].events | self.enable) - self.disable


def _where(path: str, node: yaml.Node) -> str:
    m = node.start_mark
    return f"{path}:{m.line + 1}:{m.column + 1}"


def _mapping(path: str, node: yaml.Node, keys: set[str], what: str) -> dict[str, yaml.Node]:
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_where(path, node)}: {what} must be a mapping")
    out: dict[str, yaml.Node] = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode) or k.value not in keys:
            raise ConfigError(f"{_where(path, k)}: unknown key {k.value!r} in {what}; "
                              f"expected one of: {', '.join(sorted(keys))}")
        out[k.value] = v
    return out


def _list(path: str, node: yaml.Node, what: str, kind: type,
          bounds: tuple[int, int] = (0, ID_MAX)) -> list[Any]:
    if not isinstance(node, yaml.SequenceNode):
        raise ConfigError(f"{_where(path, node)}: {what} must be a list")
    out = []
    for item in node.value:
        if not isinstance(item, yaml.ScalarNode):
            raise ConfigError(f"{_where(path, item)}: {what} entries must be plain values")
        value: Any = item.value
        if "\0" in value:  # a YAML escape can make one; no path or name holds it
            raise ConfigError(f"{_where(path, item)}: {what}: a NUL character is not allowed")
        if kind is int:
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"{_where(path, item)}: {what}: {value!r} is not a number") \
                    from None
            if not bounds[0] <= value <= bounds[1]:
                raise ConfigError(f"{_where(path, item)}: {what}: {value} is out of range "
                                  f"(allowed: {bounds[0]} to {bounds[1]})")
        out.append(value)
    return out


def _events(path: str, node: yaml.Node, what: str) -> frozenset[str]:
    names = _list(path, node, what, str)
    for item, name in zip(node.value, names, strict=True):
        if name not in CATALOG:
            raise ConfigError(f"{_where(path, item)}: {what}: unknown event type {name!r}; "
                              f"known: {', '.join(CATALOG)}")
    return frozenset(names)


def parse(text: str, path: str = "<config>") -> Config:
    try:
        # Bounded (size, depth, aliases) and strict (a key given twice).
        root = safeyaml.compose(text, path)
    except safeyaml.YamlError as e:
        raise ConfigError(str(e)) from None
    if root is None:
        return Config(source=path)
    top = _mapping(path, root, {"profile", "events", "watch", "rules", "ignore", "store"},
                   "the configuration")
    kw: dict[str, Any] = {"source": path}
    if "profile" in top:
        node = top["profile"]
        if not isinstance(node, yaml.ScalarNode) or node.value not in PROFILES:
            raise ConfigError(f"{_where(path, node)}: profile must be one of: "
                              f"{', '.join(PROFILES)}")
        kw["profile"] = node.value
    if "events" in top:
        ev = _mapping(path, top["events"], {"enable", "disable"}, "events")
        if "enable" in ev:
            kw["enable"] = _events(path, ev["enable"], "events.enable")
        if "disable" in ev:
            kw["disable"] = _events(path, ev["disable"], "events.disable")
    if "watch" in top:
        kw["watch"] = tuple(_list(path, top["watch"], "watch", str))
    if "rules" in top:
        kw["rules"] = tuple(_list(path, top["rules"], "rules", str))
    if "ignore" in top:
        ig = _mapping(path, top["ignore"], {"pids", "uids", "comms", "paths"}, "ignore")
        comms = _list(path, ig["comms"], "ignore.comms", str) if "comms" in ig else []
        for item, c in zip(ig["comms"].value if "comms" in ig else [], comms, strict=True):
            if len(c.encode()) > 15:
                raise ConfigError(f"{_where(path, item)}: ignore.comms: {c!r} is longer than "
                                  "the kernel's 15-byte task name")
        paths = _list(path, ig["paths"], "ignore.paths", str) if "paths" in ig else []
        for item, p in zip(ig["paths"].value if "paths" in ig else [], paths, strict=True):
            if not p.startswith("/"):
                raise ConfigError(f"{_where(path, item)}: ignore.paths: {p!r} must be "
                                  "absolute")
        kw["ignore"] = Ignore(
            pids=frozenset(_list(path, ig["pids"], "ignore.pids", int, (1, PID_MAX_LIMIT))
                           if "pids" in ig else []),
            uids=frozenset(_list(path, ig["uids"], "ignore.uids", int) if "uids" in ig else []),
            comms=frozenset(comms),
            paths=tuple(p.rstrip("/") or "/" for p in paths),
        )
    if "store" in top:
        kw["store"] = _store(path, top["store"])
    return Config(**kw)


def _scalar(path: str, node: yaml.Node, what: str) -> str:
    if not isinstance(node, yaml.ScalarNode) or not node.value:
        raise ConfigError(f"{_where(path, node)}: {what} must be a plain value")
    if "\0" in node.value:
        raise ConfigError(f"{_where(path, node)}: {what}: a NUL character is not allowed")
    return str(node.value)


def _store(path: str, node: yaml.Node) -> StoreConfig:
    st = _mapping(path, node, {"path", "retain", "max_size", "enabled"}, "store")
    kw: dict[str, Any] = {}
    if "path" in st:
        kw["path"] = _scalar(path, st["path"], "store.path")
    if "retain" in st:
        kw["retain"] = _scalar(path, st["retain"], "store.retain")
        if kw["retain"] != "0":
            try:
                parse_duration(kw["retain"])
            except TimeSyntaxError as e:
                raise ConfigError(f"{_where(path, st['retain'])}: store.retain: {e}") from None
    if "max_size" in st:
        kw["max_size"] = _scalar(path, st["max_size"], "store.max_size")
        try:
            size = parse_size(kw["max_size"])
        except SizeSyntaxError as e:
            raise ConfigError(f"{_where(path, st['max_size'])}: store.max_size: {e}") from None
        if size < MIN_STORE_BYTES:
            raise ConfigError(f"{_where(path, st['max_size'])}: store.max_size must be at "
                              f"least {MIN_STORE_BYTES >> 20}M")
    if "enabled" in st:
        value = _scalar(path, st["enabled"], "store.enabled").lower()
        if value not in ("true", "false", "yes", "no", "on", "off"):
            raise ConfigError(f"{_where(path, st['enabled'])}: store.enabled must be true or "
                              "false")
        kw["enabled"] = value in ("true", "yes", "on")
    return StoreConfig(**kw)


def load(path: str | None) -> Config:
    """The file at `path`; with None, DEFAULT_PATH if it exists, else defaults."""
    if path is None:
        if not Path(DEFAULT_PATH).exists():
            return Config()
        path = DEFAULT_PATH
    try:
        text = safeyaml.read(path)
    except safeyaml.YamlError as e:
        raise ConfigError(str(e)) from None
    return parse(text, path)
