"""YAML that people edit (the configuration, rule files), read with bounds.

Both files are YAML, and both may be written by someone other than the
operator who starts the sensor. PyYAML's composer has no bounds: a few
hundred bytes of nested aliases ("billion laughs") stand for billions of
nodes, and anything that walks or prints the result runs out of memory.
Here the document is composed from the parser's events in one loop, with
no recursion, and stops at the first limit it meets, with its place:

- the file's size (MAX_BYTES),
- how deep collections nest (MAX_DEPTH),
- how many aliases there are (MAX_ALIASES), and how much they stand for
  when expanded (MAX_ALIAS_EXPANSION: scalar characters plus one per node,
  summed over every alias),
- a key given twice in one mapping (the last one would silently win),
- an alias inside the node it refers to (a cycle).

It returns PyYAML nodes, as `yaml.compose` does, so callers keep their
positions. This module is at the bottom of the layers: it imports nothing
from ktrail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

# 16 MiB: Falco's largest upstream file is ~95 KiB and the default rules
# ~20 KiB; a generated file of 40,000 rules is ~16 MiB and loads in tens of
# seconds, which is as long as a start-up should take.
MAX_BYTES = 16 << 20
# 64: Falco's files and the default rules nest 5 collections deep at most,
# the rule tests 9, the configuration 3.
MAX_DEPTH = 64
# 1,000 aliases that stand for at most 1 MiB in all: anchors share a list
# between entries; nothing legitimate comes near either.
MAX_ALIASES = 1000
MAX_ALIAS_EXPANSION = 1 << 20
# How often the composer calls `checkpoint` (parser events).
CHECK_EVERY = 2048


@dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES
    max_depth: int = MAX_DEPTH
    max_aliases: int = MAX_ALIASES
    max_alias_expansion: int = MAX_ALIAS_EXPANSION


LIMITS = Limits()


class YamlError(ValueError):
    """A YAML file that cannot be read or is refused. `line` and `col` are
    1-based; 0 when the mistake is the whole file (unreadable, too large)."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:
        super().__init__(f"{path}:{line}:{col}: {message}" if line else f"{path}: {message}")
        self.path, self.line, self.col, self.message = path, line, col, message


def _mib(n: int) -> str:
    return f"{n >> 20} MiB" if n % (1 << 20) == 0 else f"{n:,} bytes"


def read(path: str | Path, limits: Limits = LIMITS) -> str:
    """The text of the file at `path`, never more than limits.max_bytes read."""
    name = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(limits.max_bytes + 1)
    except OSError as e:
        raise YamlError(name, 0, 0, f"cannot read: {e.strerror}") from None
    if len(data) > limits.max_bytes:
        raise YamlError(name, 0, 0, f"larger than {_mib(limits.max_bytes)}, the limit for a "
                        "YAML file")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise YamlError(name, 0, 0, "not a text file (not UTF-8)") from None


_Loader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)   # libyaml when present


def compose(text: str, path: str = "<yaml>", limits: Limits = LIMITS,
            checkpoint: Callable[[], None] | None = None) -> yaml.Node | None:
    """The one document in `text` as PyYAML nodes (None when empty).

    `checkpoint` is called every few thousand parser events: a background
    reload raises from it to give up, or sleeps in it to let others run."""
    if len(text) > limits.max_bytes or len(text.encode()) > limits.max_bytes:
        raise YamlError(path, 0, 0, f"larger than {_mib(limits.max_bytes)}, the limit for a "
                        "YAML file")
    loader = _Loader(text)
    try:
        return _Composer(loader, path, limits, checkpoint).stream()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlError(path, line, col, f"not valid YAML: {e.problem or e.context}") from None
    except yaml.YAMLError as e:   # the reader's: a control character, say
        raise YamlError(path, 1, 1, f"not valid YAML: {e}") from None
    finally:
        loader.dispose()


def load(text: str, path: str = "<yaml>", limits: Limits = LIMITS) -> Any:
    """The one document in `text` as plain data (YAML's safe types only)."""
    node = compose(text, path, limits)
    return None if node is None else yaml.SafeLoader("").construct_document(node)


def _at(mark: yaml.Mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


class _Open:
    """A collection being composed."""

    __slots__ = ("keys", "node", "pending", "weight")

    def __init__(self, node: yaml.CollectionNode) -> None:
        self.node = node
        self.weight = 1
        self.pending: yaml.Node | None = None            # a mapping's key awaiting its value
        self.keys: dict[str, yaml.Mark] | None = (
            {} if isinstance(node, yaml.MappingNode) else None)


class _Composer:
    def __init__(self, loader: yaml.BaseLoader, path: str, limits: Limits,
                 checkpoint: Callable[[], None] | None) -> None:
        self.loader = loader
        self.path = path
        self.limits = limits
        self.checkpoint = checkpoint
        self.anchors: dict[str, yaml.Node] = {}
        self.weights: dict[int, int] = {}     # id(anchored node) -> its expanded weight
        self.aliases = 0
        self.expansion = 0

    def fail(self, mark: yaml.Mark, message: str) -> None:
        raise YamlError(self.path, mark.line + 1, mark.column + 1, message)

    def stream(self) -> yaml.Node | None:
        get = self.loader.get_event
        get()                                               # StreamStart
        if self.loader.check_event(yaml.StreamEndEvent):
            get()
            return None
        get()                                               # DocumentStart
        node = self.document()
        get()                                               # DocumentEnd
        if not self.loader.check_event(yaml.StreamEndEvent):
            ev = get()
            self.fail(ev.start_mark, "expected a single document; found another one")
        get()
        return node

    def document(self) -> yaml.Node:
        loader, limits = self.loader, self.limits
        resolve = loader.resolve
        stack: list[_Open] = []
        open_ids: set[int] = set()
        n = 0
        while True:
            n += 1
            if self.checkpoint is not None and n % CHECK_EVERY == 0:
                self.checkpoint()
            ev = loader.get_event()
            node: yaml.Node
            if isinstance(ev, yaml.AliasEvent):
                target = self.anchors.get(ev.anchor)
                if target is None:
                    self.fail(ev.start_mark, f"alias *{ev.anchor} refers to no anchor")
                if id(target) in open_ids:
                    self.fail(ev.start_mark, f"alias *{ev.anchor} is inside the node it "
                              "refers to")
                self.aliases += 1
                if self.aliases > limits.max_aliases:
                    self.fail(ev.start_mark, f"more than {limits.max_aliases} aliases, the "
                              "limit for a YAML file")
                weight = self.weights[id(target)]
                self.expansion += weight
                if self.expansion > limits.max_alias_expansion:
                    self.fail(ev.start_mark, f"aliases expand to more than "
                              f"{_mib(limits.max_alias_expansion)}, the limit for a YAML file "
                              f"(alias *{ev.anchor})")
                node = target
            elif isinstance(ev, yaml.ScalarEvent):
                tag = ev.tag
                if tag is None or tag == "!":
                    tag = resolve(yaml.ScalarNode, ev.value, ev.implicit)
                # libyaml calls the plain style '', PyYAML None: callers test None.
                node = yaml.ScalarNode(tag, ev.value, ev.start_mark, ev.end_mark,
                                       style=ev.style or None)
                weight = 1 + len(ev.value)
                self.anchor(ev, node, weight)
            elif isinstance(ev, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                if len(stack) >= limits.max_depth:
                    self.fail(ev.start_mark, f"nested more than {limits.max_depth} levels "
                              "deep, the limit for a YAML file")
                kind = (yaml.SequenceNode if isinstance(ev, yaml.SequenceStartEvent)
                        else yaml.MappingNode)
                tag = ev.tag
                if tag is None or tag == "!":
                    tag = resolve(kind, None, ev.implicit)
                coll = kind(tag, [], ev.start_mark, None, flow_style=ev.flow_style)
                self.anchor(ev, coll, None)
                stack.append(_Open(coll))
                open_ids.add(id(coll))
                continue
            elif isinstance(ev, yaml.SequenceEndEvent | yaml.MappingEndEvent):
                done = stack.pop()
                node = done.node
                node.end_mark = ev.end_mark
                open_ids.discard(id(node))
                weight = done.weight
                if id(node) in self.weights:
                    self.weights[id(node)] = weight
            else:   # a parser that yields something else is not one this knows
                self.fail(ev.start_mark, f"unexpected {type(ev).__name__}")
            if not stack:
                return node
            self.add(stack[-1], node, weight)

    def anchor(self, ev: yaml.NodeEvent, node: yaml.Node, weight: int | None) -> None:
        if ev.anchor is None:
            return
        if ev.anchor in self.anchors:
            first = self.anchors[ev.anchor].start_mark
            self.fail(ev.start_mark, f"anchor &{ev.anchor} is defined twice (first at "
                      f"{_at(first)})")
        self.anchors[ev.anchor] = node
        # A collection's weight is known when it ends; aliases cannot refer to
        # it before then (that would be a cycle).
        self.weights[id(node)] = weight if weight is not None else 0

    def add(self, parent: _Open, node: yaml.Node, weight: int) -> None:
        parent.weight += weight
        if parent.keys is None:
            parent.node.value.append(node)
            return
        if parent.pending is None:
            if isinstance(node, yaml.ScalarNode):
                first = parent.keys.get(node.value)
                if first is not None:
                    self.fail(node.start_mark, f"duplicate key {node.value!r} (first at "
                              f"{_at(first)}): the second would silently replace the first")
                parent.keys[node.value] = node.start_mark
            parent.pending = node
        else:
            parent.node.value.append((parent.pending, node))
            parent.pending = None
