"""The condition language: tokens and a syntax tree (grammar in docs/rules.md).

Falco's syntax, so that existing rules read as they are: barewords for
fields, macro names and unquoted values (`fd.name startswith /etc`), quoted
strings, parenthesised lists that may name lists, and `and`/`or`/`not`.
Parsing knows nothing of fields or macros; the compiler resolves names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Binary operators, longest first where one is a prefix of another.
COMPARE_OPS = ("==", "!=", "<=", ">=", "=", "<", ">")
WORD_OPS = ("contains", "icontains", "bcontains", "startswith", "bstartswith", "endswith",
            "glob", "iglob", "regex", "pmatch")
LIST_OPS = ("in", "intersects", "pmatch")
UNARY_OPS = ("exists",)
TRANSFORMS = ("basename", "lower", "tolower", "upper", "toupper", "dirname")
KEYWORDS = {"and", "or", "not", *WORD_OPS, *LIST_OPS, *UNARY_OPS}


class ConditionError(ValueError):
    """A condition that does not parse; ``col`` is 1-based within it."""

    def __init__(self, message: str, col: int) -> None:
        super().__init__(message)
        self.message = message
        self.col = col


@dataclass(frozen=True)
class Token:
    kind: str   # "word", "string", "op", "(", ")", ",", "end"
    text: str
    col: int    # 1-based


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|=|<|>)
  | (?P<punct>[(),])
  | (?P<word>[^\s(),=<>!"']+(?:\[[^\]]*\])?)
    """,
    re.VERBOSE,
)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ConditionError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup
        value = m.group()
        if kind == "string":
            tokens.append(Token("string", _unquote(value), pos + 1))
        elif kind == "op":
            tokens.append(Token("op", value, pos + 1))
        elif kind == "punct":
            tokens.append(Token(value, value, pos + 1))
        elif kind == "word":
            tokens.append(Token("word", value, pos + 1))
        pos = m.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


def _unquote(s: str) -> str:
    body = s[1:-1]
    return re.sub(r"\\(.)", r"\1", body)


# --- syntax tree -----------------------------------------------------------

@dataclass(frozen=True)
class Node:
    col: int


@dataclass(frozen=True)
class And(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or(Node):
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not(Node):
    item: Node


@dataclass(frozen=True)
class MacroRef(Node):
    name: str


@dataclass(frozen=True)
class Operand:
    field: str               # "proc.aname[2]" keeps its index in the name
    transforms: tuple[str, ...] = ()
    col: int = 0


@dataclass(frozen=True)
class Value:
    text: str
    quoted: bool
    col: int


@dataclass(frozen=True)
class Compare(Node):
    left: Operand
    op: str
    value: Value | None = None               # binary operators
    values: tuple[Value, ...] | None = None  # list operators (names of lists included)


# How deep parentheses, `not`s and transforms may nest in one condition.
# Falco's rules and the default rules need 8 levels at most, macros
# included; the parser, the compiler and the compiled predicate each
# recurse once per level, so an unbounded depth is a RecursionError.
MAX_NESTING = 64


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    def deeper(self, t: Token) -> None:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ConditionError(f"nested more than {MAX_NESTING} levels deep (parentheses, "
                                 "not, transforms)", t.col)

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        t = self.tokens[self.i]
        self.i = min(self.i + 1, len(self.tokens) - 1)
        return t

    def is_word(self, *words: str) -> bool:
        t = self.peek()
        return t.kind == "word" and t.text in words

    def parse(self) -> Node:
        if self.peek().kind == "end":
            raise ConditionError("empty condition", 1)
        node = self.or_expr()
        t = self.peek()
        if t.kind != "end":
            raise ConditionError(f"unexpected {t.text!r}: expected 'and', 'or' or the end",
                                 t.col)
        return node

    def or_expr(self) -> Node:
        col = self.peek().col
        items = [self.and_expr()]
        while self.is_word("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(col, tuple(items))

    def and_expr(self) -> Node:
        col = self.peek().col
        items = [self.not_expr()]
        while self.is_word("and"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(col, tuple(items))

    def not_expr(self) -> Node:
        if self.is_word("not"):
            t = self.take()
            self.deeper(t)
            node = Not(t.col, self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        t = self.peek()
        if t.kind == "(":
            self.take()
            self.deeper(t)
            node = self.or_expr()
            self.depth -= 1
            close = self.take()
            if close.kind != ")":
                raise ConditionError(f"expected ')' to close the '(' at column {t.col}, "
                                     f"found {close.text or 'the end'!r}", close.col)
            return node
        if t.kind != "word" or t.text in ("and", "or"):
            raise ConditionError(f"expected a field, a macro or '(', found "
                                 f"{t.text or 'the end'!r}", t.col)
        operand = self.operand()
        nxt = self.peek()
        if nxt.kind == "op" or (nxt.kind == "word" and nxt.text in KEYWORDS
                                and nxt.text not in ("and", "or", "not")):
            return self.comparison(operand)
        if operand.transforms:
            raise ConditionError(f"{operand.transforms[0]}(...) needs an operator after it",
                                 nxt.col)
        return MacroRef(t.col, operand.field)

    def operand(self) -> Operand:
        t = self.take()
        if t.text in TRANSFORMS and self.peek().kind == "(":
            self.take()
            self.deeper(t)
            inner = self.operand()
            self.depth -= 1
            close = self.take()
            if close.kind != ")":
                raise ConditionError(f"expected ')' after {t.text}(", close.col)
            return Operand(inner.field, (*inner.transforms, t.text), t.col)
        return Operand(t.text, (), t.col)

    def comparison(self, left: Operand) -> Node:
        op_tok = self.take()
        op = op_tok.text
        if op in UNARY_OPS:
            return Compare(left.col, left, op)
        if op in LIST_OPS and self.peek().kind in ("(", "word"):
            if self.peek().kind == "(":
                return Compare(left.col, left, op, values=self.value_list())
            # `x in list_name` without parentheses
            w = self.take()
            return Compare(left.col, left, op, values=(Value(w.text, False, w.col),))
        v = self.take()
        if v.kind not in ("word", "string"):
            raise ConditionError(f"expected a value after {op!r}, found "
                                 f"{v.text or 'the end'!r}", v.col)
        return Compare(left.col, left, op, value=Value(v.text, v.kind == "string", v.col))

    def value_list(self) -> tuple[Value, ...]:
        open_tok = self.take()
        values: list[Value] = []
        while True:
            t = self.take()
            if t.kind == ")" and not values:
                return ()
            if t.kind not in ("word", "string"):
                raise ConditionError(f"expected a list item, found {t.text or 'the end'!r}",
                                     t.col)
            values.append(Value(t.text, t.kind == "string", t.col))
            sep = self.take()
            if sep.kind == ")":
                return tuple(values)
            if sep.kind != ",":
                raise ConditionError(f"expected ',' or ')' in the list opened at column "
                                     f"{open_tok.col}, found {sep.text or 'the end'!r}",
                                     sep.col)


def parse(text: str) -> Node:
    """Parse a condition into its syntax tree; ConditionError on a mistake."""
    return _Parser(text).parse()
