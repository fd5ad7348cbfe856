"""Conditions compiled once into Python closures.

Macros are expanded and lists inlined at compile time, each field resolves
to its getter, and every comparison value is converted once (numbers
parsed, regexes and globs compiled, `in` lists turned into sets). What
remains per event is a chain of closure calls.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os.path
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ktrail.rules import fields as F
from ktrail.rules.lang import (
    MAX_NESTING,
    And,
    Compare,
    ConditionError,
    MacroRef,
    Node,
    Not,
    Operand,
    Or,
    Value,
)

Predicate = Callable[[dict[str, Any]], bool]

# Items of an and/or chain compiled as nested closures; longer ones loop.
CHAIN_NESTED = 8


class CompileError(ValueError):
    """A condition that parses but cannot be compiled (unknown field or macro,
    a value of the wrong kind). ``col`` is 1-based in the condition that has
    the mistake, which is ``where`` (a macro's name when it is in a macro)."""

    def __init__(self, message: str, col: int = 0, where: str = "",
                 unsupported: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.col = col
        self.where = where
        # The field or construct that is not supported (Falco compatibility).
        self.unsupported = unsupported


@dataclass
class Scope:
    """Macros (parsed) and lists visible to a condition."""

    macros: Mapping[str, Node] = field(default_factory=dict)
    lists: Mapping[str, list[Any]] = field(default_factory=dict)
    dialect: str = "ktrail"
    broken: Mapping[str, str] = field(default_factory=dict)  # macro -> why it did not parse
    # Compiled macros, shared by every rule of a rule set: a macro that ten
    # rules use (file_written) is evaluated once per event, not ten times.
    compiled: dict[tuple[str, str], Predicate] = field(default_factory=dict)


@dataclass
class Compiled:
    predicate: Predicate
    # Event types the condition can match; None = any (no evt.type test
    # that narrows it). Rules are indexed by these.
    types: frozenset[str] | None


_TRANSFORM: dict[str, Callable[[Any], Any]] = {
    "basename": lambda v: os.path.basename(v) if isinstance(v, str) else v,
    "dirname": lambda v: os.path.dirname(v) if isinstance(v, str) else v,
    "lower": lambda v: v.lower() if isinstance(v, str) else v,
    "tolower": lambda v: v.lower() if isinstance(v, str) else v,
    "upper": lambda v: v.upper() if isinstance(v, str) else v,
    "toupper": lambda v: v.upper() if isinstance(v, str) else v,
}


def _number(text: str) -> int | float | None:
    try:
        return int(text, 0)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return None


def _coerce(text: str, quoted: bool) -> Any:
    if quoted:
        return text
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    n = _number(text)
    return text if n is None else n


def _eq(a: Any, b: Any) -> bool:
    if a == b:
        return True
    # Numbers in string fields (file.mode "4755") and strings in number fields.
    if isinstance(a, str) and isinstance(b, int | float) and not isinstance(b, bool):
        return a == str(b)
    if isinstance(a, int | float) and not isinstance(a, bool) and isinstance(b, str):
        return str(a) == b
    return False


def _any(get: Callable[[dict[str, Any]], Any], test: Callable[[Any], bool]) -> Predicate:
    """Apply test to a scalar field, or to each element of a list field."""
    def pred(e: dict[str, Any]) -> bool:
        v = get(e)
        if v is None:
            return False
        if isinstance(v, list):
            return any(x is not None and test(x) for x in v)
        return test(v)
    return pred


def _chain(preds: list[Predicate], conjunction: bool) -> Predicate:
    """`a and b and c` (or `or`) as nested closures: no generator per event.

    A long chain is a loop instead: nested, each item is one more frame
    when it runs, and `a or b or ...` of a thousand items would raise
    RecursionError on the first event that matches none."""
    if len(preds) > CHAIN_NESTED:
        items = tuple(preds)
        if conjunction:
            def every(e: dict[str, Any]) -> bool:
                return all(p(e) for p in items)
            return every

        def some(e: dict[str, Any]) -> bool:
            return any(p(e) for p in items)
        return some
    f = preds[-1]
    for p in reversed(preds[:-1]):
        if conjunction:
            def f(e: dict[str, Any], p: Predicate = p, rest: Predicate = f) -> bool:
                return p(e) and rest(e)
        else:
            def f(e: dict[str, Any], p: Predicate = p, rest: Predicate = f) -> bool:
                return p(e) or rest(e)
    return f


def _once_per_event(pred: Predicate) -> Predicate:
    """A macro's result for the event being judged, remembered until the next
    event: every rule of an event is evaluated before the next event, and
    events are not changed after enrichment."""
    last: list[Any] = [None, False]

    def cached(e: dict[str, Any]) -> bool:
        if last[0] is e:
            return last[1]
        r = pred(e)
        last[0], last[1] = e, r
        return r
    return cached


class Compiler:
    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._expanding: list[str] = []
        self._where = ""
        self._depth = 0

    def compile(self, node: Node, where: str = "") -> Compiled:
        self._where = where
        pred = self.node(node)
        return Compiled(pred, self.types(node))

    # --- event-type analysis, for the index ---

    def types(self, node: Node) -> frozenset[str] | None:
        """Over-approximates the event types that can satisfy node."""
        if isinstance(node, And):
            sets = [t for t in (self.types(i) for i in node.items) if t is not None]
            if not sets:
                return None
            out = sets[0]
            for s in sets[1:]:
                out &= s
            return out
        if isinstance(node, Or):
            out2: set[str] = set()
            for i in node.items:
                t = self.types(i)
                if t is None:
                    return None
                out2 |= t
            return frozenset(out2)
        if isinstance(node, MacroRef):
            m = self.scope.macros.get(node.name)
            return None if m is None or node.name in self._expanding else self._macro_types(
                node.name, m)
        if isinstance(node, Compare) and not node.left.transforms:
            if node.op in ("=", "==") and node.value is not None:
                vals = [node.value.text]
            elif node.op == "in" and node.values is not None:
                vals = self._list_values(node.values)
            else:
                return None
            t = F.evt_types_for(node.left.field, [str(v) for v in vals], self.scope.dialect)
            return None if t is None else frozenset(t)
        return None  # Not, and any other comparison: can't narrow

    def _macro_types(self, name: str, m: Node) -> frozenset[str] | None:
        self._expanding.append(name)
        try:
            return self.types(m)
        finally:
            self._expanding.pop()

    # --- predicates ---

    def node(self, node: Node) -> Predicate:
        # Macros inside macros nest too: the depth is counted across them,
        # since the compiled predicate recurses once per level when it runs.
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                raise CompileError(f"nested more than {MAX_NESTING} levels deep, macros "
                                   "included", node.col, self._where)
            return self._node(node)
        finally:
            self._depth -= 1

    def _node(self, node: Node) -> Predicate:
        if isinstance(node, And):
            return _chain([self.node(i) for i in node.items], conjunction=True)
        if isinstance(node, Or):
            return _chain([self.node(i) for i in node.items], conjunction=False)
        if isinstance(node, Not):
            p = self.node(node.item)
            return lambda e: not p(e)
        if isinstance(node, MacroRef):
            return self.macro(node)
        if isinstance(node, Compare):
            return self.compare(node)
        raise CompileError(f"unexpected node {node!r}", node.col, self._where)

    def macro(self, ref: MacroRef) -> Predicate:
        m = self.scope.macros.get(ref.name)
        if ref.name in self.scope.broken:
            raise CompileError(self.scope.broken[ref.name], ref.col, self._where)
        if m is None:
            if "." in ref.name:
                raise CompileError(f"{ref.name!r} needs an operator (a field on its own is "
                                   "not a condition)", ref.col, self._where)
            raise CompileError(f"unknown macro {ref.name!r}", ref.col, self._where,
                               unsupported=f"macro {ref.name}")
        if ref.name in self._expanding:
            circle = [*self._expanding[self._expanding.index(ref.name):], ref.name]
            raise CompileError(f"macro {ref.name!r} refers to itself: {' -> '.join(circle)}",
                               ref.col, self._where)
        key = (ref.name, self.scope.dialect)
        done = self.scope.compiled.get(key)
        if done is not None:
            return done
        self._expanding.append(ref.name)
        where = self._where
        self._where = f"macro {ref.name}"
        try:
            pred = _once_per_event(self.node(m))
        finally:
            self._expanding.pop()
            self._where = where
        self.scope.compiled[key] = pred
        return pred

    def operand(self, op: Operand) -> Callable[[dict[str, Any]], Any]:
        try:
            get = F.resolve(op.field, self.scope.dialect)
        except F.UnknownField as e:
            raise CompileError(str(e), op.col, self._where, unsupported=op.field) from None
        for t in op.transforms:
            if t not in _TRANSFORM:
                raise CompileError(f"unknown transform {t}()", op.col, self._where,
                                   unsupported=f"{t}()")
            f = _TRANSFORM[t]
            inner = get

            def get(e: dict[str, Any], f: Callable[[Any], Any] = f,
                    inner: Callable[[dict[str, Any]], Any] = inner) -> Any:
                v = inner(e)
                return [f(x) for x in v] if isinstance(v, list) else f(v)
        return get

    def _list_values(self, values: tuple[Value, ...]) -> list[Any]:
        out: list[Any] = []
        for v in values:
            if not v.quoted and v.text in self.scope.lists:
                out.extend(self.scope.lists[v.text])
            else:
                out.append(_coerce(v.text, v.quoted))
        return out

    def compare(self, node: Compare) -> Predicate:
        get = self.operand(node.left)
        op = node.op
        if op == "exists":
            return lambda e: get(e) is not None
        if self.scope.dialect == "falco" and node.left.field in F.NETWORK_FIELDS:
            return self._in_networks(node, get)
        if node.values is not None:
            items = self._list_values(node.values)
            if op == "in":
                strs = {str(x) for x in items if x is not None}
                def in_(v: Any) -> bool:
                    return v in strs if isinstance(v, str) else str(v) in strs
                match = _any(get, in_)
                if None in items:  # `x in (null, ...)`: absent matches too
                    return lambda e: get(e) is None or match(e)
                return match
            if op == "intersects":
                strs = {str(x) for x in items}
                def inter(e: dict[str, Any]) -> bool:
                    v = get(e)
                    if v is None:
                        return False
                    vs = v if isinstance(v, list) else [v]
                    return any(str(x) in strs for x in vs)
                return inter
            if op == "pmatch":
                # Path prefixes: /etc matches /etc and /etc/x, not /etcx.
                bases = {str(x).rstrip("/") or "/" for x in items}
                dirs = tuple(b if b == "/" else b + "/" for b in bases)
                return _any(get, lambda v: isinstance(v, str) and (
                    v in bases or v.startswith(dirs)))
        assert node.value is not None
        raw = node.value
        val = _coerce(raw.text, raw.quoted)
        sval = raw.text
        if val is None and op in ("=", "==", "!="):
            if op == "!=":
                return lambda e: get(e) is not None
            return lambda e: get(e) is None
        def eq(v: Any) -> bool:
            # An unquoted value is also its text: file.mode = 0644.
            return _eq(v, val) or (isinstance(v, str) and v == sval)
        if op in ("=", "=="):
            return _any(get, eq)
        if op == "!=":
            def ne(e: dict[str, Any]) -> bool:
                v = get(e)
                if isinstance(v, list):
                    return not any(eq(x) for x in v)
                return not eq(v)
            return ne
        if op in ("<", "<=", ">", ">="):
            num = _number(sval)
            if num is None:
                raise CompileError(f"{op} needs a number, got {sval!r}", raw.col, self._where)
            cmp = {"<": lambda a: a < num, "<=": lambda a: a <= num,
                   ">": lambda a: a > num, ">=": lambda a: a >= num}[op]

            def numeric(v: Any) -> bool:
                if isinstance(v, bool):
                    return False
                if isinstance(v, str):
                    n = _number(v)
                    return n is not None and cmp(n)
                return isinstance(v, int | float) and cmp(v)
            return _any(get, numeric)
        if op in ("contains", "bcontains"):
            return _any(get, lambda v: isinstance(v, str) and sval in v)
        if op == "icontains":
            low = sval.lower()
            return _any(get, lambda v: isinstance(v, str) and low in v.lower())
        if op in ("startswith", "bstartswith"):
            return _any(get, lambda v: isinstance(v, str) and v.startswith(sval))
        if op == "endswith":
            return _any(get, lambda v: isinstance(v, str) and v.endswith(sval))
        if op in ("glob", "iglob"):
            rx = re.compile(fnmatch.translate(sval), re.IGNORECASE if op == "iglob" else 0)
            return _any(get, lambda v: isinstance(v, str) and rx.match(v) is not None)
        if op == "regex":
            try:
                rx = re.compile(sval)
            except re.error as e:
                raise CompileError(f"bad regex {sval!r}: {e}", raw.col, self._where) from None
            return _any(get, lambda v: isinstance(v, str) and rx.search(v) is not None)
        raise CompileError(f"operator {op!r} is not supported", raw.col, self._where,
                           unsupported=f"operator {op}")

    def _in_networks(self, node: Compare, get: Callable[[dict[str, Any]], Any]) -> Predicate:
        """`=`, `!=` and `in` on an address field mean membership of networks."""
        if node.op not in ("=", "==", "!=", "in") or node.left.transforms:
            raise CompileError(f"{node.left.field} takes =, != or in with networks",
                               node.left.col, self._where, unsupported=f"{node.left.field} "
                               f"{node.op}")
        texts = ([str(x) for x in self._list_values(node.values)] if node.values is not None
                 else [node.value.text] if node.value is not None else [])
        try:
            # Falco's own lists quote their networks: ['"10.0.0.0/8"', ...]
            nets = [ipaddress.ip_network(t.strip("\"'"), strict=False) for t in texts]
        except ValueError as e:
            raise CompileError(f"{node.left.field}: {e}", node.left.col, self._where) from None

        def inside(v: Any) -> bool:
            try:
                a = ipaddress.ip_address(v)
            except ValueError:
                return False
            return any(a in n for n in nets)
        match = _any(get, inside)
        if node.op == "!=":
            return lambda e: get(e) is not None and not match(e)
        return match


def compile_condition(node: Node, scope: Scope, where: str = "") -> Compiled:
    return Compiler(scope).compile(node, where)


__all__ = ["CompileError", "Compiled", "ConditionError", "Predicate", "Scope",
           "compile_condition"]
