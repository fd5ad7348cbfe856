"""Rule files: YAML entries (rule, macro, list, required_engine_version)
merged in order into one RuleSet, then compiled rule by rule.

Merging follows Falco's model so its files load as they are: a later file
may append to or override an earlier rule, macro or list, or disable a rule
by name. Unlike Falco, a mistake stays local: a rule that fails to compile
is reported (with the macro or field at fault) and left out, and every other
rule still loads. Redefining an existing name without `override`/`append`
is an error, never a silent replacement.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ktrail import safeyaml
from ktrail.rules import fields as F
from ktrail.rules.compiler import Compiled, CompileError, Predicate, Scope, compile_condition
from ktrail.rules.lang import And, ConditionError, Not, parse
from ktrail.rules.state import build_state

PRIORITIES = ("EMERGENCY", "ALERT", "CRITICAL", "ERROR", "WARNING", "NOTICE",
              "INFORMATIONAL", "INFO", "DEBUG")
# Items that list entries gain from the lists they name (Falco's nested
# lists), over the whole rule set: a chain of lists that each name the one
# before several times would otherwise multiply without bound.
MAX_LIST_EXPANSION = 1_000_000
RULE_KEYS = {"rule", "desc", "condition", "output", "priority", "tags", "enabled",
             "exceptions", "append", "override", "source", "shadow", "sequence",
             "threshold", "skip-if-unknown-filter", "warn_evttypes", "capture",
             "capture_duration"}


class RuleFileError(ValueError):
    """A mistake in a rule file, placed as FILE:LINE:COL."""

    def __init__(self, path: str, line: int, col: int, message: str) -> None:
        super().__init__(f"{path}:{line}:{col}: {message}")
        self.path, self.line, self.col, self.message = path, line, col, message


@dataclass
class Where:
    path: str
    line: int  # 1-based
    col: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.col}"


@dataclass
class Problem:
    """A rule left out, or a construct that is not supported."""

    where: Where
    rule: str
    message: str
    unsupported: str = ""   # the field/operator/macro at fault, when it is that

    def __str__(self) -> str:
        return f"{self.where}: rule {self.rule!r}: {self.message}"


@dataclass
class RuleDef:
    name: str
    where: Where
    condition: str
    cond_where: Where
    output: str = ""
    desc: str = ""
    priority: str = "WARNING"
    tags: list[str] = field(default_factory=list)
    enabled: bool = True
    shadow: bool = False
    exceptions: list[dict[str, Any]] = field(default_factory=list)
    sequence: dict[str, Any] | None = None
    threshold: dict[str, Any] | None = None
    source: str = "syscall"
    dialect: str = "ktrail"
    # Characters before the condition's text on its line when it is written
    # on one line (plain or quoted), so a column in it maps into the file;
    # None for block scalars.
    cond_inline: int | None = None
    # A %field of the output that does not resolve, found when the output
    # was read (where it is known); the rule is left out with it.
    output_problem: Problem | None = None

    def place(self, col: int) -> Where:
        """The file position of column col of the condition."""
        w = self.cond_where
        if self.cond_inline is None or col < 1:
            return w
        return Where(w.path, w.line, w.col + self.cond_inline + col - 1)


@dataclass
class Rule:
    """A compiled rule."""

    name: str
    where: Where
    priority: str
    tags: list[str]
    output: str
    desc: str
    shadow: bool
    match: Compiled
    definition: RuleDef
    # Macros and lists the rule was compiled with (sequence steps use them).
    scope: Scope | None = None

    @property
    def mitre(self) -> list[str]:
        return [t for t in self.tags if re.fullmatch(r"T\d{4}(\.\d{3})?", t)]


@dataclass
class RuleSet:
    rules: list[Rule] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    disabled: list[str] = field(default_factory=list)


# --- YAML with positions -------------------------------------------------

Checkpoint = Callable[[], None]


def _load_nodes(path: str, text: str, checkpoint: Checkpoint | None = None) -> yaml.Node | None:
    # Bounded: size, depth, aliases, duplicate keys (safeyaml).
    try:
        return safeyaml.compose(text, path, checkpoint=checkpoint)
    except safeyaml.YamlError as e:
        raise RuleFileError(path, e.line or 1, e.col or 1, e.message) from None


def _where(path: str, node: yaml.Node) -> Where:
    return Where(path, node.start_mark.line + 1, node.start_mark.column + 1)


def _plain(node: yaml.Node) -> Any:
    if not node:
        return None
    if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:str":
        return node.value     # most values: no constructor needed
    # A bare constructor: a whole SafeLoader per value was a third of the
    # time a large file took to load.
    return yaml.constructor.SafeConstructor().construct_object(node, deep=True)


def _output_problem(path: str, node: yaml.Node, rule: str, text: str,
                    dialect: str) -> Problem | None:
    """The first %field of an output template that is not a field, placed.

    Falco files name many fields ktrail has no counterpart for (container
    images, Kubernetes): there they print <NA>, as Falco prints a field that
    does not apply, and the rule still loads."""
    if dialect != "ktrail":
        return None
    for m in F.TEMPLATE_FIELD.finditer(text):
        try:
            F.resolve(m.group(1), dialect)
        except F.UnknownField as e:
            col = m.start() + 1
            where = _where(path, node)
            inline = _inline_offset(node)
            if inline is not None:
                where = Where(where.path, where.line, where.col + inline + col - 1)
            return Problem(where, rule, f"output, column {col}: {e}", unsupported=m.group(1))
    return None


class _Merger:
    def __init__(self, checkpoint: Checkpoint | None = None) -> None:
        self.checkpoint = checkpoint
        self.lists: dict[str, list[Any]] = {}
        self.list_where: dict[str, Where] = {}
        self.macros: dict[str, tuple[str, Where]] = {}
        self.rules: dict[str, RuleDef] = {}
        self.order: list[str] = []
        self.errors: list[RuleFileError] = []

    def fail(self, path: str, node: yaml.Node, msg: str) -> None:
        w = _where(path, node)
        self.errors.append(RuleFileError(path, w.line, w.col, msg))

    def add_file(self, path: str, text: str, dialect: str) -> None:
        root = _load_nodes(path, text, self.checkpoint)
        if root is None:
            return
        if not isinstance(root, yaml.SequenceNode):
            self.fail(path, root, "a rule file is a YAML list of rule, macro and list entries")
            return
        for n, item in enumerate(root.value):
            if self.checkpoint is not None and n % 64 == 0:
                self.checkpoint()
            self.add_entry(path, item, dialect)

    def add_entry(self, path: str, node: yaml.Node, dialect: str) -> None:
        if not isinstance(node, yaml.MappingNode):
            self.fail(path, node, "each entry is a mapping with rule:, macro: or list:")
            return
        keys = {k.value: (k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)}
        kinds = [k for k in ("rule", "macro", "list", "required_engine_version",
                             "required_plugin_versions") if k in keys]
        if not kinds:
            self.fail(path, node, "entry has none of rule:, macro:, list:, "
                      "required_engine_version:")
            return
        kind = kinds[0]
        vnode = keys[kind][1]
        if kind == "required_plugin_versions":
            return
        if kind == "required_engine_version":
            return  # every version of Falco's syntax we parse is accepted
        name = _plain(vnode)
        if not isinstance(name, str) or not name:
            self.fail(path, vnode, f"{kind}: needs a name")
            return
        data = {k: v for k, (_, v) in keys.items()}
        override = _plain(data["override"]) if "override" in data else {}
        append = bool(_plain(data["append"])) if "append" in data else False
        if not isinstance(override, dict):
            self.fail(path, data["override"], "override: maps keys to append or replace")
            return
        if kind == "list":
            self.add_list(path, node, name, data, append, override)
        elif kind == "macro":
            self.add_macro(path, node, name, data, append, override)
        else:
            self.add_rule(path, node, name, data, append, override, dialect)

    def add_list(self, path: str, node: yaml.Node, name: str, data: dict[str, yaml.Node],
                 append: bool, override: dict[str, str]) -> None:
        if "items" not in data:
            self.fail(path, node, f"list {name!r} has no items:")
            return
        items_node = data["items"]
        items = _plain(items_node)
        if not isinstance(items, list):
            self.fail(path, items_node, f"list {name!r}: items: must be a list")
            return
        for item in items_node.value:
            if not isinstance(item, yaml.ScalarNode):
                self.fail(path, item, f"list {name!r}: each item is a plain value (a name, "
                          "a path, a number), not a list or mapping")
                return
        self.list_where[name] = _where(path, node)
        items = [i for i in items if i is not None]
        mode = override.get("items") or ("append" if append else None)
        if mode == "append":
            if name not in self.lists:
                self.fail(path, node, f"list {name!r}: nothing to append to (define it first)")
                return
            self.lists[name] = self.lists[name] + items
        else:
            # A list defined again replaces the earlier one, as in Falco:
            # upstream files rely on it (lists are data, not rules).
            self.lists[name] = items

    def add_macro(self, path: str, node: yaml.Node, name: str, data: dict[str, yaml.Node],
                  append: bool, override: dict[str, str]) -> None:
        if "condition" not in data:
            self.fail(path, node, f"macro {name!r} has no condition:")
            return
        cond = _plain(data["condition"])
        if not isinstance(cond, str):
            self.fail(path, data["condition"], f"macro {name!r}: condition: must be text")
            return
        where = _where(path, data["condition"])
        mode = override.get("condition") or ("append" if append else None)
        if mode == "append":
            if name not in self.macros:
                self.fail(path, node, f"macro {name!r}: nothing to append to")
                return
            old, _ = self.macros[name]
            self.macros[name] = (f"({old}) {cond.strip()}", where)
        else:
            self.macros[name] = (cond, where)

    def add_rule(self, path: str, node: yaml.Node, name: str, data: dict[str, yaml.Node],
                 append: bool, override: dict[str, str], dialect: str) -> None:
        unknown = sorted(set(data) - RULE_KEYS)
        if unknown and dialect == "ktrail":
            k = next(kn for kn, _ in node.value if kn.value == unknown[0])
            self.fail(path, k, f"rule {name!r}: unknown key {unknown[0]!r}")
            return
        exists = name in self.rules
        only_enabled = set(data) <= {"rule", "enabled"}
        if exists and only_enabled:
            self.rules[name].enabled = bool(_plain(data["enabled"])) if "enabled" in data else True
            return
        if not exists and (append or override):
            what = "append to" if append else "override"
            self.fail(path, node, f"rule {name!r}: nothing to {what} (no earlier rule has "
                      "this name)")
            return
        if exists and (append or override):
            r = self.rules[name]
            for key, vnode in data.items():
                if key in ("rule", "append", "override"):
                    continue
                mode = override.get(key) or ("append" if append else None)
                value = _plain(vnode)
                if mode is None:
                    self.fail(path, vnode, f"rule {name!r}: {key}: is not in override:")
                    continue
                if key == "condition":
                    r.condition = (f"({r.condition}) {value.strip()}" if mode == "append"
                                   else value)
                    r.cond_where = _where(path, vnode)
                elif key == "exceptions":
                    r.exceptions = (r.exceptions + (value or [])) if mode == "append" else (
                        value or [])
                elif key == "tags":
                    r.tags = (r.tags + list(value or [])) if mode == "append" else list(
                        value or [])
                elif key == "output":
                    bad = _output_problem(path, vnode, name, str(value or ""), r.dialect)
                    if mode == "append":
                        r.output = f"{r.output} {value}"
                        r.output_problem = r.output_problem or bad
                    else:
                        r.output, r.output_problem = str(value or "").strip(), bad
                elif hasattr(r, key):
                    setattr(r, key, value)
            return
        if exists:
            prev = self.rules[name].where
            self.fail(path, node, f"rule {name!r} is already defined at {prev}; use "
                      "override: (or append: true) to change it, or enabled: false to "
                      "turn it off")
            return
        stateful = "sequence" in data or "threshold" in data
        if "condition" not in data and "sequence" not in data:
            self.fail(path, node, f"rule {name!r} has no condition:")
            return
        cond_node = data.get("condition")
        cond = _plain(cond_node) if cond_node is not None else "evt.type exists"
        if not isinstance(cond, str):
            self.fail(path, cond_node or node, f"rule {name!r}: condition: must be text")
            return
        prio = str(_plain(data.get("priority")) or "WARNING").upper()
        if prio not in PRIORITIES:
            self.fail(path, data["priority"], f"rule {name!r}: priority {prio!r} is not one "
                      f"of {', '.join(PRIORITIES)}")
            return
        if "output" not in data and not stateful and dialect == "ktrail":
            self.fail(path, node, f"rule {name!r} has no output:")
            return
        tags = _plain(data["tags"]) if "tags" in data else []
        output = str(_plain(data.get("output")) or "").strip()
        self.rules[name] = RuleDef(
            name=name, where=_where(path, node), condition=cond,
            cond_where=_where(path, cond_node or node),
            output=output,
            desc=str(_plain(data.get("desc")) or "").strip(),
            priority="INFORMATIONAL" if prio == "INFO" else prio,
            tags=[str(t) for t in tags or []],
            enabled=bool(_plain(data["enabled"])) if "enabled" in data else True,
            shadow=bool(_plain(data["shadow"])) if "shadow" in data else False,
            exceptions=list(_plain(data["exceptions"]) or []) if "exceptions" in data else [],
            sequence=_plain(data["sequence"]) if "sequence" in data else None,
            threshold=_plain(data["threshold"]) if "threshold" in data else None,
            source=str(_plain(data.get("source")) or "syscall"),
            dialect=dialect,
            cond_inline=_inline_offset(cond_node),
            output_problem=None if "output" not in data else _output_problem(
                path, data["output"], name, output, dialect),
        )
        self.order.append(name)

    def expand_lists(self) -> None:
        """A list item that names another list stands for that list's items,
        as in Falco (`items: [deb_binaries, rpm]`). Lists that include each
        other in a circle are an error naming the circle."""
        done: dict[str, list[Any]] = {}
        gained = 0

        def include(name: str, items: list[Any], acc: dict[tuple[str, Any], Any]) -> None:
            nonlocal gained
            gained += len(items)
            if gained > MAX_LIST_EXPANSION:
                w = self.list_where[name]
                raise RuleFileError(w.path, w.line, w.col, f"list {name!r}: lists that name "
                                    f"lists expand to more than {MAX_LIST_EXPANSION:,} items")
            # Keyed by type too: 1 and True are one key in a dict.
            acc.update(((type(x).__name__, x), x) for x in items)

        for top in self.lists:
            if top in done:
                continue
            # Depth first without recursion: a chain of lists may be long.
            stack: list[tuple[str, Iterator[Any]]] = [(top, iter(self.lists[top]))]
            path = [top]
            acc: dict[str, dict[tuple[str, Any], Any]] = {top: {}}
            while stack:
                name, items = stack[-1]
                for item in items:
                    if not (isinstance(item, str) and item in self.lists):
                        acc[name][(type(item).__name__, item)] = item
                    elif item in acc:   # on the path: a circle
                        circle = [*path[path.index(item):], item]
                        w = self.list_where[name]
                        raise RuleFileError(w.path, w.line, w.col, (
                            f"list {item!r} includes itself" if len(circle) == 2 else
                            "lists include each other in a circle: " + " -> ".join(circle)))
                    elif item in done:
                        include(name, done[item], acc[name])
                    else:
                        stack.append((item, iter(self.lists[item])))
                        path.append(item)
                        acc[item] = {}
                        break
                else:
                    stack.pop()
                    path.pop()
                    done[name] = list(acc.pop(name).values())
                    if stack:
                        include(stack[-1][0], done[name], acc[stack[-1][0]])
        self.lists = done


def _inline_offset(node: yaml.Node | None) -> int | None:
    if (not isinstance(node, yaml.ScalarNode) or node.style not in (None, '"', "'")
            or node.start_mark.line != node.end_mark.line):
        return None
    return 1 if node.style else 0


def _exception_condition(exc: dict[str, Any]) -> str | None:
    """Falco exceptions as a condition: `(f1 = v1 and f2 = v2) or ...`."""
    fields = exc.get("fields")
    values = exc.get("values") or []
    if not fields or not values:
        return None
    if isinstance(fields, str):
        fields = [fields]
        values = [[v] for v in values]
    comps = exc.get("comps") or ["="] * len(fields)
    if isinstance(comps, str):
        comps = [comps]
    alts = []
    for tup in values:
        if not isinstance(tup, list):
            tup = [tup]
        parts = []
        for f, c, v in zip(fields, comps, tup, strict=False):
            if isinstance(v, list):
                items = ", ".join(_quote(x) for x in v)
                parts.append(f"{f} {c} ({items})")
            else:
                parts.append(f"{f} {c} {_quote(v)}")
        alts.append("(" + " and ".join(parts) + ")")
    return " or ".join(alts) if alts else None


def _quote(v: Any) -> str:
    s = str(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def load(paths: list[str | Path], dialect: str | None = None,
         texts: dict[str, str] | None = None, checkpoint: Checkpoint | None = None) -> RuleSet:
    """Load rule files in order. Raises RuleFileError for file-level mistakes
    (YAML, an entry's shape, lists in a circle); rules that do not compile
    land in problems.

    `checkpoint` is called often (every few thousand YAML events, every few
    dozen entries, every rule compiled): a background reload raises from it
    to give up, or pauses in it to leave the processor to the event loop."""
    m = _Merger(checkpoint)
    rs = RuleSet()
    for p in paths:
        path = str(p)
        if texts and path in texts:
            text = texts[path]
        else:
            try:
                text = safeyaml.read(path)
            except safeyaml.YamlError as e:
                raise RuleFileError(path, 1, 1, e.message) from None
        d = dialect or ("falco" if "falco" in Path(path).name.lower() else "ktrail")
        m.add_file(path, text, d)
    if m.errors:
        raise m.errors[0]
    m.expand_lists()
    return compile_rules(m, rs)


def compile_rules(m: _Merger, rs: RuleSet) -> RuleSet:
    parsed_macros = {}
    compiled_macros: dict[tuple[str, str], Predicate] = {}  # shared by its rules (Scope)
    broken: dict[str, str] = {}
    for name, (cond, where) in m.macros.items():
        try:
            parsed_macros[name] = parse(cond)
        except ConditionError as e:
            broken[name] = f"macro {name!r} ({where}) does not parse: column {e.col}: {e.message}"
    for n, name in enumerate(m.order):
        if m.checkpoint is not None and n % 8 == 0:
            m.checkpoint()
        d = m.rules[name]
        if not d.enabled:
            rs.disabled.append(name)
            continue
        if d.source != "syscall":
            rs.problems.append(Problem(d.where, name, f"source {d.source!r} is not supported "
                                       "(syscall only)", unsupported=f"source {d.source}"))
            continue
        if d.output_problem is not None:
            rs.problems.append(d.output_problem)
            continue
        scope = Scope(parsed_macros, m.lists, d.dialect, broken, compiled_macros)
        try:
            rule = _compile_rule(d, scope)
        except CompileError as e:
            if e.where:   # in a macro: the rule's own condition is not at fault
                rs.problems.append(Problem(d.cond_where, name, f"condition, in {e.where}, "
                                           f"column {e.col}: {e.message}",
                                           unsupported=e.unsupported))
            else:
                rs.problems.append(Problem(d.place(e.col), name,
                                           f"condition, column {e.col}: {e.message}",
                                           unsupported=e.unsupported))
            continue
        except ConditionError as e:
            rs.problems.append(Problem(d.place(e.col), name,
                                       f"condition, column {e.col}: {e.message}"))
            continue
        except ValueError as e:
            rs.problems.append(Problem(d.where, name, str(e)))
            continue
        if rule.match.types == frozenset():
            # Falco syscalls ktrail does not record (dup2, sendfile...): the
            # rule could never fire, so loading it would only mislead.
            rs.problems.append(Problem(d.cond_where, name, "none of its evt.type values is "
                                       "an event ktrail records", unsupported="evt.type"))
            continue
        rs.rules.append(rule)
    return rs


def _compile_rule(d: RuleDef, scope: Scope) -> Rule:
    node = parse(d.condition)
    for exc in d.exceptions:
        if not isinstance(exc, dict):
            raise ValueError("exceptions: each item is a mapping with name, fields, values")
        text = _exception_condition(exc)
        if text:
            node = And(node.col, (node, Not(0, parse(text))))
    compiled = compile_condition(node, scope)
    rule = Rule(name=d.name, where=d.where, priority=d.priority, tags=d.tags,
                output=d.output, desc=d.desc, shadow=d.shadow, match=compiled,
                definition=d, scope=scope)
    build_state(rule, 1)   # a bad sequence:/threshold: spec raises ValueError here
    return rule
