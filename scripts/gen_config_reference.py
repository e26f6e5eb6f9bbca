#!/usr/bin/env python3
"""Write the README's config reference from the JSON Schema (the schema is the documentation).

    python scripts/gen_config_reference.py          # rewrite README.md between the markers
    python scripts/gen_config_reference.py --check  # exit 1 when README.md is out of date

Every key gets its path (`endpoints.<name>.uri`, `collections[].flows`), type, whether it is
required, its default (taken from "Default ..." in the description), the description and an
example, all from syncd/config/schema.json.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "syncd" / "config" / "schema.json"
README = ROOT / "README.md"
START = "<!-- config-reference:start -->"
END = "<!-- config-reference:end -->"
# "Default 30." / "...; default every flow." -- a sentence or clause starting with it.
_DEFAULT = re.compile(r"(?:^|[.;]\s+)default:?\s+(.+?)(?:\.(?:\s|$)|;|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Key:
    path: str
    node: dict[str, Any]
    required: bool


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """`node` with its local `$ref` merged in (the node's own keys win, e.g. a description)."""
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node
    target: Any = schema
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    merged = dict(resolve(schema, target))
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def child(schema: dict[str, Any], node: dict[str, Any], key: str) -> tuple[str, dict[str, Any]]:
    """The schema of `key` under an object node, and its path segment (a name or `<name>`)."""
    node = resolve(schema, node)
    props = node.get("properties", {})
    if key in props:
        return key, resolve(schema, props[key])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        return "<name>", resolve(schema, extra)
    raise KeyError(key)


def keys(schema: dict[str, Any], node: dict[str, Any], path: str = "") -> Iterator[Key]:
    """Every documented key under `node`, depth first, in schema order."""
    node = resolve(schema, node)
    required = set(node.get("required", ()))
    for name, sub in node.get("properties", {}).items():
        sub = resolve(schema, sub)
        sub_path = f"{path}.{name}" if path else name
        yield Key(sub_path, sub, name in required)
        yield from _below(schema, sub, sub_path)


def _below(schema: dict[str, Any], node: dict[str, Any], path: str) -> Iterator[Key]:
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        yield from keys(schema, extra, f"{path}.<name>")
    elif node.get("properties"):
        yield from keys(schema, node, path)
    items = node.get("items")
    if isinstance(items, dict) and resolve(schema, items).get("properties"):
        yield from keys(schema, items, f"{path}[]")


def type_of(node: dict[str, Any]) -> str:
    if "const" in node:
        return f"`{json.dumps(node['const'])}`"
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    kind = node.get("type", "")
    if kind == "array":
        items = node.get("items", {})
        inner = items.get("type", "object") if "properties" not in items else "object"
        return f"list of {inner}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return "map of name → object"
    return str(kind)


def default_of(node: dict[str, Any]) -> str:
    """The schema's `default` keyword, else "Default X." in the description."""
    if "default" in node:
        value = node["default"]
        return f"`{value if isinstance(value, str) else json.dumps(value)}`"
    match = _DEFAULT.search(node.get("description", ""))
    return match.group(1).strip() if match else ""


def example_of(node: dict[str, Any]) -> str:
    examples = node.get("examples") or []
    if not examples:
        return ""
    value = examples[0]
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(schema: dict[str, Any]) -> str:
    lines = [
        "Generated from `syncd/config/schema.json` by `make docs`; do not edit by hand.",
        "`<name>` stands for a name you choose (letters, digits, `_`, `-`);",
        "`[]` for each entry of a list.",
        "",
    ]
    for top in keys(schema, schema):
        if "." in top.path or "[]" in top.path:
            continue
        lines += [f"### `{top.path}`", "", _cell(top.node.get("description", "")), ""]
        rows = [top, *_below(schema, top.node, top.path)]
        if len(rows) == 1:  # a plain key: one line says it all
            lines += [_summary(top), ""]
            continue
        lines += ["| key | type | required | default | example | description |"]
        lines += ["| --- | --- | --- | --- | --- | --- |"]
        for key in rows:
            cells = [
                f"`{key.path}`",
                type_of(key.node),
                "yes" if key.required else "",
                _cell(default_of(key.node)),
                _cell(example_of(key.node)),
                _cell(key.node.get("description", "")) if key is not top else "(above)",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _summary(key: Key) -> str:
    parts = [f"Type: {type_of(key.node)}", "required" if key.required else "optional"]
    if default := default_of(key.node):
        parts.append(f"default: {default}")
    if example := example_of(key.node):
        parts.append(f"example: {example}")
    return "; ".join(parts) + "."


def updated(readme: str, reference: str) -> str:
    if START not in readme or END not in readme:
        raise SystemExit(f"{README.name}: markers {START} / {END} not found")
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{reference}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    schema = json.loads(SCHEMA.read_text())
    current = README.read_text()
    new = updated(current, render(schema))
    if args.check:
        if new != current:
            print(f"{README.name}: config reference is out of date; run `make docs`")  # noqa: T201
            return 1
        print(f"{README.name}: config reference is up to date")  # noqa: T201
        return 0
    if new != current:
        README.write_text(new)
        print(f"{README.name}: config reference updated")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
