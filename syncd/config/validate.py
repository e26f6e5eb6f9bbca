"""JSON Schema pass: every schema error at once, each located and worded for a person."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, ValidationError

from syncd.config.load import ConfigIssue, LoadedYaml
from syncd.config.secrets import redact

_NO_LITERAL = "a literal password is not allowed in the config; use password_env or password_file"
_SECRET_KEYS = {"password": _NO_LITERAL, "passwd": _NO_LITERAL, "secret": _NO_LITERAL}
_TYPE_NAMES = {
    "string": "a string",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "object": "a mapping (key: value)",
    "array": "a list",
    "null": "nothing",
}


@cache
def schema() -> dict[str, Any]:
    text = resources.files("syncd.config").joinpath("schema.json").read_text(encoding="utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def schema_issues(loaded: LoadedYaml) -> list[ConfigIssue]:
    validator = Draft202012Validator(schema())
    issues: list[ConfigIssue] = []
    for error in _leaf_errors(validator.iter_errors(loaded.data)):
        issues.extend(_to_issues(loaded, error))
    return sorted(set(issues), key=lambda issue: (issue.line, issue.column, issue.message))


def _leaf_errors(errors: Iterable[ValidationError]) -> Iterator[ValidationError]:
    """Flatten oneOf/anyOf so the user sees the concrete problem, not 'is not valid under...'."""
    for error in errors:
        if error.validator in ("oneOf", "anyOf") and error.context:
            if _is_exactly_one_of_required(error):
                yield error
                continue
            yield from _leaf_errors(error.context)
        else:
            yield error


def _is_exactly_one_of_required(error: ValidationError) -> bool:
    options = _expected(error)
    return isinstance(options, list) and all(set(opt) == {"required"} for opt in options)


def _to_issues(loaded: LoadedYaml, error: ValidationError) -> list[ConfigIssue]:
    path = list(error.absolute_path)
    validator = error.validator
    if validator == "additionalProperties":
        return _unknown_keys(loaded, error, path)
    if validator == "required":
        missing = _missing_key(error)
        return [loaded.issue(path, f"missing required key '{missing}'")]
    if validator == "oneOf" and _is_exactly_one_of_required(error):
        keys = " or ".join(opt["required"][0] for opt in _expected(error))
        return [loaded.issue(path, f"needs exactly one of {keys}")]
    return [loaded.issue(path, _message(error))]


def _unknown_keys(loaded: LoadedYaml, error: ValidationError, path: list[Any]) -> list[ConfigIssue]:
    allowed = sorted(_schema_of(error).get("properties", {}))
    instance = error.instance if isinstance(error.instance, dict) else {}
    issues = []
    for key in instance:
        if key in allowed:
            continue
        message = _SECRET_KEYS.get(str(key).lower())
        if message is None:
            message = f"unknown key '{key}'"
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean '{close[0]}'?"
            elif allowed:
                message += f" (allowed: {', '.join(allowed)})"
        issues.append(loaded.issue([*path, key], message, key=True))
    return issues


def _missing_key(error: ValidationError) -> str:
    instance = error.instance if isinstance(error.instance, dict) else {}
    for key in _expected(error):
        if key not in instance:
            return str(key)
    return str(_expected(error)[0])


def _message(error: ValidationError) -> str:
    validator = error.validator
    value = error.instance
    shown = _show(value)
    if validator == "type":
        expected = _expected(error)
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(name, name) for name in names)
        return f"expected {wanted}, got {shown}"
    if validator == "enum":
        options = [str(option) for option in _expected(error)]
        message = f"{shown} is not one of {', '.join(options)}"
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
        return message + (f"; did you mean '{close[0]}'?" if close else "")
    if validator == "const":
        return f"must be {_expected(error)!r}, got {shown}"
    if validator == "pattern":
        return f"{shown} is not valid: {_schema_of(error).get('description', 'unexpected format')}"
    if validator in ("minimum", "exclusiveMinimum"):
        return f"{shown} is too small (minimum {_expected(error)})"
    if validator == "maximum":
        return f"{shown} is too large (maximum {_expected(error)})"
    if validator in ("minItems", "minProperties"):
        return f"needs at least {_expected(error)} entries"
    if validator == "minLength":
        return "must not be empty"
    if validator == "uniqueItems":
        return "has the same entry twice"
    return str(error.message)


def _expected(error: ValidationError) -> Any:
    return error.validator_value


def _schema_of(error: ValidationError) -> dict[str, Any]:
    return error.schema if isinstance(error.schema, dict) else {}


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        value = redact(value)
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    return repr(value)
