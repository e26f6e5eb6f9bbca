"""Read a YAML config file into plain data plus a node tree that knows line numbers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from syncd.errors import EXIT_USAGE, SyncdError

PathItem = str | int


@dataclass(frozen=True)
class ConfigIssue:
    """One located problem of a config file."""

    file: str
    line: int
    column: int
    path: tuple[PathItem, ...]
    message: str

    def __str__(self) -> str:
        """Located; any credentials a misplaced URI carried into the message are redacted."""
        from syncd.config.secrets import redact

        dotted = dotted_path(self.path) or "(top)"
        return f"{self.file}:{self.line}:{self.column}: {dotted}: {redact(self.message)}"


class ConfigInvalid(SyncdError):
    """The config has problems; every one of them is listed."""

    exit_code = EXIT_USAGE

    def __init__(self, issues: Sequence[ConfigIssue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(issue) for issue in self.issues))


def dotted_path(path: Sequence[PathItem]) -> str:
    text = ""
    for item in path:
        if isinstance(item, bool):
            item = str(item).lower()
        text += f"[{item}]" if isinstance(item, int) else (f".{item}" if text else item)
    return text


@dataclass(frozen=True)
class LoadedYaml:
    file: str
    data: Any
    root: yaml.Node | None
    # Problems found while reading that do not stop validation (duplicate keys).
    issues: tuple[ConfigIssue, ...] = ()

    def locate(self, path: Sequence[PathItem], *, key: bool = False) -> tuple[int, int]:
        """Line and column (1-based) of the node at `path`, or of its deepest existing parent.

        With `key=True` the mark of the mapping key is returned (for "unknown key" errors).
        """
        node = self.root
        mark = node.start_mark if node is not None else None
        for item in path:
            found = _child(node, item)
            if found is None:
                break
            key_node, node = found
            mark = key_node.start_mark if key and key_node is not None else node.start_mark
        if mark is None:
            return 1, 1
        return mark.line + 1, mark.column + 1

    def issue(self, path: Sequence[PathItem], message: str, *, key: bool = False) -> ConfigIssue:
        line, column = self.locate(path, key=key)
        return ConfigIssue(self.file, line, column, tuple(path), message)


def _child(node: yaml.Node | None, item: PathItem) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        # The last occurrence of a repeated key is the one the loaded data holds.
        for key_node, value_node in reversed(node.value):
            if isinstance(key_node, yaml.ScalarNode) and _key_matches(key_node, item):
                return key_node, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(item, int):
        if 0 <= item < len(node.value):
            return None, node.value[item]
    return None


def _key_matches(key_node: yaml.ScalarNode, item: PathItem) -> bool:
    """Compare as YAML reads the key: `on:` is the boolean true, `1:` the number 1."""
    if key_node.value == item:
        return True
    try:
        key = yaml.constructor.SafeConstructor().construct_object(key_node)
    except yaml.YAMLError:
        return False
    return bool(key == item and type(key) is type(item))


def load_yaml(path: Path) -> LoadedYaml:
    """Parse `path` with the safe loader; file and syntax problems become a ConfigInvalid."""
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(file, 1, 1, "config file not found; pass -c FILE or set SYNCD_CONFIG") from None
    except IsADirectoryError:
        raise _fail(file, 1, 1, "is a directory, not a config file") from None
    except UnicodeDecodeError as exc:
        raise _fail(file, 1, 1, f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise _fail(file, 1, 1, f"cannot read config file: {exc.strerror}") from None
    try:
        root, data = _parse(text)
    except yaml.MarkedYAMLError as exc:
        mark, problem = _syntax_problem(exc)
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise _fail(file, line, column, f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise _fail(file, 1, 1, f"YAML error: {exc}") from None
    if data is None:
        raise _fail(file, 1, 1, "config file is empty; start from config/syncd.example.yaml")
    if not isinstance(data, dict):
        raise _fail(file, 1, 1, "the config must be a mapping of keys (version, endpoints, ...)")
    loaded = LoadedYaml(file, data, root)
    return LoadedYaml(file, data, root, tuple(_duplicate_keys(loaded, root, ())))


def _parse(text: str) -> tuple[yaml.Node | None, Any]:
    """One parse gives both the node tree (for line numbers) and the data built from it."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        return root, (loader.construct_document(root) if root is not None else None)
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.MarkedYAMLError) -> tuple[yaml.Mark | None, str]:
    """Where and what, in words a person can act on (PyYAML speaks of tokens)."""
    problem = exc.problem or "invalid YAML"
    context = exc.context or ""
    if "'\\t'" in problem:
        return exc.problem_mark, "a tab character here; indent YAML with spaces only"
    if "quoted scalar" in context and "end of stream" in problem:
        return exc.context_mark, "this quoted string is never closed"
    if "single document" in context:
        return exc.problem_mark, "a second YAML document ('---'); a config file holds one"
    if "<block end>" in problem or "did not find expected key" in problem:
        problem += " (is this line indented like the lines above it?)"
    elif "mapping values are not allowed" in problem:
        problem += " (quote a value that contains ': ', or check the indentation)"
    elif context.startswith("expected"):
        problem = f"{context}, {problem}"
    return exc.problem_mark or exc.context_mark, problem


def _duplicate_keys(
    loaded: LoadedYaml, node: yaml.Node | None, path: tuple[PathItem, ...]
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            name = str(key_node.value)
            if name in seen:
                mark = key_node.start_mark
                issues.append(
                    ConfigIssue(
                        loaded.file,
                        mark.line + 1,
                        mark.column + 1,
                        (*path, name),
                        f"'{name}' appears twice in the same mapping (first at line "
                        f"{seen[name]}); keep one",
                    )
                )
            seen.setdefault(name, key_node.start_mark.line + 1)
            issues += _duplicate_keys(loaded, value_node, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            issues += _duplicate_keys(loaded, item, (*path, index))
    return issues


def _fail(file: str, line: int, column: int, message: str) -> ConfigInvalid:
    return ConfigInvalid([ConfigIssue(file, line, column, (), message)])
