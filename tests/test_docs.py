"""The README's config reference is generated from the schema and documents every key."""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_config_reference.py"


@functools.cache
def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_reference", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _reference() -> str:
    gen = _generator()
    readme = (ROOT / "README.md").read_text()
    return readme.partition(gen.START)[2].partition(gen.END)[0]


def _paths(gen: ModuleType, schema: dict[str, Any], node: dict[str, Any], doc: Any, path: str):
    """Reference paths (`endpoints.<name>.uri`) of every key a config document uses."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            segment, sub = gen.child(schema, node, key)
            sub_path = f"{path}.{segment}" if path else segment
            if segment != "<name>":  # a map entry is documented by its map's row
                yield sub_path
            yield from _paths(gen, schema, sub, value, sub_path)
    elif isinstance(doc, list) and isinstance(node.get("items"), dict):
        items = gen.resolve(schema, node["items"])
        for value in doc:
            yield from _paths(gen, schema, items, value, f"{path}[]")


def test_readme_config_reference_matches_the_schema() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr + "\nrun `make docs`"


def test_every_key_of_the_example_config_is_documented() -> None:
    gen = _generator()
    schema = json.loads((ROOT / "syncd" / "config" / "schema.json").read_text())
    example = yaml.safe_load((ROOT / "config" / "syncd.example.yaml").read_text())
    reference = _reference()
    paths = set(_paths(gen, schema, schema, example, ""))
    assert "endpoints.<name>.uri_env" in paths  # the walk reaches nested keys
    missing = sorted(p for p in paths if f"`{p}`" not in reference)
    assert not missing, f"keys of syncd.example.yaml missing from README's reference: {missing}"


def test_every_schema_key_has_a_description() -> None:
    gen = _generator()
    schema = json.loads((ROOT / "syncd" / "config" / "schema.json").read_text())
    undocumented = [k.path for k in gen.keys(schema, schema) if not k.node.get("description")]
    assert not undocumented, f"schema keys without a description: {undocumented}"


def test_a_schema_change_changes_the_reference() -> None:
    gen = _generator()
    schema = json.loads((ROOT / "syncd" / "config" / "schema.json").read_text())
    fresh = gen.updated(f"x\n{gen.START}\n{gen.END}\n", gen.render(schema))
    schema["properties"]["state_dir"]["description"] = "Changed."
    assert gen.updated(fresh, gen.render(schema)) != fresh
