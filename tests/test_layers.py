"""syncd's packages are layered: no package imports another package that imports it back,
directly or through others.

A package is a directory under syncd/ (`engine`, `mongo`, `backup`, ...) or a module
directly in syncd/ (`hooks`, `compare`, ...). The graph is read from the source with `ast`,
every import counted (also those inside functions), so a cycle is named with the imports
that make it.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import syncd

ROOT = Path(syncd.__file__).parent


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    """`syncd.engine.flow` -> `engine`; `syncd.hooks` -> `hooks`; `syncd` -> `syncd`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _imported(path: Path, module: str) -> set[str]:
    """The syncd modules (or packages) `module` imports."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            found.update(f"{target}.{a.name}" for a in node.names)
    return {m for m in found if m == "syncd" or m.startswith("syncd.")}


def package_imports() -> dict[tuple[str, str], list[str]]:
    """(importing package, imported package) -> the imports, as `module -> name`."""
    paths = sorted(ROOT.rglob("*.py"))
    modules = {_module(p) for p in paths}
    edges: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in paths:
        module = _module(path)
        for name in sorted(_imported(path, module)):
            # `from syncd.x import name`: the module syncd.x.name, else syncd.x
            target = name if name in modules else name.rpartition(".")[0]
            here, there = _package(module), _package(target)
            if here != there and "syncd" not in (here, there):
                edges[here, there].append(f"{module} -> {target}")
    return edges


def _cycle(edges: dict[tuple[str, str], list[str]]) -> list[str]:
    """A shortest cycle of packages (its first package repeated last), or [] if none."""
    after: dict[str, set[str]] = defaultdict(set)
    for here, there in edges:
        after[here].add(there)
    found: list[list[str]] = []
    for start in sorted(after):
        paths, seen = [[start]], {start}
        while paths:  # breadth first: the first way back to `start` is a shortest one
            path = paths.pop(0)
            if start in after[path[-1]]:
                found.append([*path, start])
                break
            for there in sorted(after[path[-1]] - seen):
                seen.add(there)
                paths.append([*path, there])
    return min(found, key=len, default=[])


def test_no_package_imports_one_that_imports_it_back() -> None:
    edges = package_imports()
    pairs = [
        f"{a} <-> {b}:\n  " + "\n  ".join(edges[a, b] + edges[b, a])
        for a, b in sorted(edges)
        if a < b and (b, a) in edges
    ]
    assert not pairs, "packages importing each other:\n" + "\n".join(pairs)
    cycle = _cycle(edges)
    steps = [imp for a, b in zip(cycle, cycle[1:], strict=False) for imp in edges[a, b]]
    assert not cycle, f"packages in a cycle: {' -> '.join(cycle)}:\n  " + "\n  ".join(steps)


def test_the_bottom_layer_imports_nothing_above_it() -> None:
    """`syncd.mongo` talks to servers; it imports only config, errors and pause."""
    above = {
        there
        for (here, there), _ in package_imports().items()
        if here == "mongo" and there not in {"config", "errors", "pause"}
    }
    assert not above, f"syncd.mongo imports {sorted(above)}"


def test_only_the_state_dir_names_paths_in_it() -> None:
    """`StateDir` (syncd/state/statedir.py) owns the state directory's layout: no other module
    joins a path onto `state_dir` (`config.state_dir / "tmp"`)."""
    joins = []
    for path in sorted(ROOT.rglob("*.py")):
        if path == ROOT / "state" / "statedir.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
                left = node.left
                name = left.attr if isinstance(left, ast.Attribute) else getattr(left, "id", "")
                if name == "state_dir":
                    joins.append(f"{_module(path)}:{node.lineno}: {ast.unparse(node)}")
    assert not joins, "paths joined under the state directory outside StateDir:\n" + "\n".join(
        joins
    )
