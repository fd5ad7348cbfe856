"""The layering of src/ktrail: imports between packages go down, never round.

Every module is parsed with `ast`, not imported: nothing runs, and an import
made inside a function (to defer it) counts as much as one at the top.
Type-only imports count too. `from __future__`, the standard library and
third-party packages are not ktrail, so they are not edges.

The nodes are ktrail's top-level packages and modules (`units`, `config`,
`loader`...); imports inside one package are not checked here.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "ktrail"

# Bottom first. A package may import from its own layer and the layers below
# it. Peers share a line ("sinks sources"). A new package is one new line.
LAYERS: list[str] = [
    "__init__",  # ktrail/__init__.py itself (__version__): imported before anything
    "units safeyaml memory",  # sizes, times, clock ticks; bounded YAML; RSS and heap
                              # trimming: nothing from ktrail
    "strings",   # text from the kernel: lossless decoding, JSON form, escaping for people
    "bpf",       # the compiled objects (package data)
    "events",    # the registry of event types: ids, hooks, decoding, fields, summaries
    "decode",    # the contract's record layouts, batch decoding
    "process",
    "loader",
    "sources",   # ring readers, uevents
    "output",
    "store",
    "sinks",     # output and store behind one interface
    "rules",
    "config",
    "engine",
    "cli",
    "__main__",
]


@dataclass(frozen=True)
class Import:
    path: str       # the importing file, from the directory above the package's
    module: str     # the importing module, e.g. "ktrail.sources.ringbuf"
    line: int
    target: str     # what it imports, e.g. "ktrail.loader.libbpf"

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}"


def layer_ranks(layers: list[str]) -> dict[str, int]:
    ranks: dict[str, int] = {}
    for rank, line in enumerate(layers):
        for name in line.split():
            assert name not in ranks, f"LAYERS: {name!r} is declared twice"
            ranks[name] = rank
    return ranks


def layer_order(layers: list[str]) -> list[str]:
    return [name for line in layers for name in line.split()]


def top_level(root: Path) -> dict[str, list[Path]]:
    """Each top-level package or module of the tree at `root` -> its files."""
    units: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        if entry.is_dir() and entry.name != "__pycache__":
            files = sorted(p for p in entry.rglob("*.py") if "__pycache__" not in p.parts)
            if files:  # a namespace package (no __init__.py) is a package too
                units[entry.name] = files
        elif entry.suffix == ".py":
            units[entry.stem] = [entry]
    return units


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path, units: set[str]) -> Iterator[Import]:
    """Every import of the package at `root` made in `path`, anywhere in it."""
    top = root.name
    module = module_name(root, path)
    shown = str(path.relative_to(root.parent.parent))  # src/ktrail/...
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == top or alias.name.startswith(top + "."):
                    yield Import(shown, module, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolved against the importing package
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == top:
                # `from ktrail import units` imports a package; `from ktrail
                # import __version__` the root __init__.
                for alias in node.names:
                    name = f"{top}.{alias.name}" if alias.name in units else top
                    yield Import(shown, module, node.lineno, name)
            elif target.startswith(top + "."):
                # `from ktrail.loader import libbpf` names the module imported.
                where = root.joinpath(*target.split(".")[1:])
                names = {f"{target}.{a.name}" if (where / f"{a.name}.py").is_file()
                         or (where / a.name).is_dir() else target: None for a in node.names}
                for name in names:  # once each, in order
                    yield Import(shown, module, node.lineno, name)


def unit_of(target: str) -> str:
    """'ktrail.loader.libbpf' -> 'loader'; 'ktrail' (its __init__) -> '__init__'."""
    parts = target.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def graph(root: Path) -> dict[tuple[str, str], list[Import]]:
    """(importing unit, imported unit) -> the imports that make that edge."""
    units = top_level(root)
    edges: dict[tuple[str, str], list[Import]] = {}
    for unit, files in units.items():
        for path in files:
            for imp in imports_of(root, path, set(units)):
                dst = unit_of(imp.target)
                if dst != unit:
                    edges.setdefault((unit, dst), []).append(imp)
    return edges


def shortest_cycle(succ: dict[str, set[str]], group: set[str], start: str) -> list[str]:
    """A shortest way from `start` back to itself inside `group` (breadth first)."""
    prev = {start: start}
    todo = [start]
    for u in todo:  # grows while it is walked
        for v in sorted(succ.get(u, ())):
            if v == start:
                path = [u]
                while path[-1] != start:
                    path.append(prev[path[-1]])
                return path[::-1]
            if v in group and v not in prev:
                prev[v] = u
                todo.append(v)
    raise AssertionError(f"{start} is in no cycle")


def cycles(edges: dict[tuple[str, str], list[Import]], layers: list[str]) -> list[str]:
    """One message per group of packages that import each other round."""
    ranks = layer_ranks(layers)
    order = layer_order(layers)
    succ: dict[str, set[str]] = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in succ.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reaches = {n: reach(n) for n in succ}
    done: set[str] = set()
    out = []
    for n in sorted(succ, key=lambda u: (order.index(u) if u in order else len(order), u)):
        if n in done or n not in reaches[n]:
            continue
        group = {m for m in reaches[n] if n in reaches.get(m, set())}
        done |= group
        path = shortest_cycle(succ, group, n)  # for the headline
        inside = {e: imps for e, imps in sorted(edges.items()) if set(e) <= group}
        up = [e for e in inside if set(e) <= ranks.keys() and ranks[e[1]] > ranks[e[0]]]
        lines = [f"import cycle: {' -> '.join([*path, n])}"]
        if len(group) > len(path):
            lines[0] += f" (cycles run among {', '.join(sorted(group))})"
        if up:  # what makes the cycle: the imports that go up the layers
            lines.append("  closed by these imports up the LAYERS:")
            lines += [f"    {i}" for e in up for i in inside[e]]
            lines.append("  with: " + ", ".join(
                f"{a} -> {b} ({len(imps)} import{'s' * (len(imps) > 1)})"
                for (a, b), imps in inside.items() if (a, b) not in up))
        else:  # peers on one layer: any edge may be the one to cut
            for (a, b), imps in inside.items():
                lines.append(f"  {a} -> {b}:")
                lines += [f"    {i}" for i in imps]
        out.append("\n".join(lines))
    return out


def upward(edges: dict[tuple[str, str], list[Import]], layers: list[str]) -> list[str]:
    """One message per import of a package from a higher layer."""
    ranks = layer_ranks(layers)
    out = []
    for (a, b), imps in sorted(edges.items()):
        if a in ranks and b in ranks and ranks[b] > ranks[a]:
            out += [f"{i.path}:{i.line}: {i.module} imports {i.target}: {a} is below {b} "
                    "in LAYERS" for i in imps]
    return out


# ---- the package ----------------------------------------------------------------------


def test_every_package_has_a_layer() -> None:
    declared = set(layer_order(LAYERS))
    present = set(top_level(SRC))
    assert not present - declared, (
        f"not in LAYERS (tests/unit/test_layers.py): {sorted(present - declared)}; "
        "add each at the layer it belongs to")
    assert not declared - present, (
        f"in LAYERS but not in src/ktrail: {sorted(declared - present)}")


def test_no_import_cycle_between_packages() -> None:
    found = cycles(graph(SRC), LAYERS)
    assert not found, "\n".join(found)


def test_imports_go_down_the_layers() -> None:
    found = upward(graph(SRC), LAYERS)
    assert not found, "imports from a higher layer:\n" + "\n".join(found)


def test_units_imports_nothing_from_ktrail() -> None:
    assert not any(a == "units" for a, _ in graph(SRC))


# ---- the checker, on a made-up package --------------------------------------------------


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "ktrail" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "ktrail"


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    return write(tmp_path, {
        "__init__.py": '__version__ = "0"\n',
        "units.py": "from __future__ import annotations\nimport os\n",
        "low/__init__.py": "",
        "low/a.py": "from .b import x\n\n\ndef f():\n    from ktrail.high import y\n",
        "low/b.py": "x = 1\n",
        "high/__init__.py": "from ktrail.low.a import f\nfrom ktrail import units, __version__\n",
        "nsp/m.py": "import ktrail.units\nimport numpy\n",  # namespace package
    })


def test_checker_reads_every_kind_of_import(pkg: Path) -> None:
    edges = graph(pkg)
    assert set(edges) == {("low", "high"), ("high", "low"), ("high", "units"),
                          ("high", "__init__"), ("nsp", "units")}
    (imp,) = edges[("low", "high")]
    assert (imp.module, imp.line, imp.target) == ("ktrail.low.a", 5, "ktrail.high")


def test_checker_names_the_modules_of_a_cycle(pkg: Path) -> None:
    (msg,) = cycles(graph(pkg), ["__init__", "units", "low", "high", "nsp"])
    assert msg.splitlines() == [
        "import cycle: low -> high -> low",
        "  closed by these imports up the LAYERS:",
        "    ktrail.low.a:5 imports ktrail.high",
        "  with: high -> low (1 import)",
    ]
    # On one layer, neither import is the upward one: both are named.
    (msg,) = cycles(graph(pkg), ["__init__", "units", "low high", "nsp"])
    assert msg.splitlines()[1:] == [
        "  high -> low:", "    ktrail.high:1 imports ktrail.low.a",
        "  low -> high:", "    ktrail.low.a:5 imports ktrail.high",
    ]


def test_checker_names_module_line_and_target_of_an_upward_import(pkg: Path) -> None:
    (msg,) = upward(graph(pkg), ["__init__", "units", "low", "high nsp"])
    assert msg.endswith("low/a.py:5: ktrail.low.a imports ktrail.high: low is below high "
                        "in LAYERS")
    assert upward(graph(pkg), ["__init__", "units", "low high", "nsp"]) == []


def test_checker_passes_a_clean_package(tmp_path: Path) -> None:
    root = write(tmp_path, {"units.py": "", "a/__init__.py": "from ktrail.units import *\n",
                            "b.py": "from ktrail.a import x\nfrom . import units\n"})
    edges = graph(root)
    assert set(edges) == {("a", "units"), ("b", "a"), ("b", "units")}
    assert cycles(edges, ["units", "a", "b"]) == []
    assert upward(edges, ["units", "a", "b"]) == []


def test_shortest_cycle_takes_the_short_way_round() -> None:
    succ = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": {"b"}}
    assert shortest_cycle(succ, {"a", "b", "c", "d"}, "a") == ["a", "b", "c"]
    assert shortest_cycle(succ, {"a", "b", "c", "d"}, "d") == ["d", "b", "c"]
