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
_NO_LITERAL_URI = (
    "a literal password is not allowed in the config; keep the credentials in the URI "
    "and give it with uri_env, uri_file or uri_command"
)
_SECRET_KEYS = {"password": _NO_LITERAL, "passwd": _NO_LITERAL, "secret": _NO_LITERAL}
# Keys whose value may be a secret pasted in the wrong place: never echoed back.
_HIDDEN_VALUE_KEYS = {
    "password_env",
    "password_file",
    "uri_env",
    "uri_file",
    "uri_command",
    "key_env",
    "key_file",
}
_NO_LITERAL_KEY = "a literal masking key is not allowed in the config; use key_env or key_file"
_ENV_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"
_PATTERN_HINTS = {
    "^[A-Za-z][A-Za-z0-9_-]{0,62}$": "use letters, digits, '_' and '-', starting with a letter "
    "(at most 63 characters)",
    "^mongodb(\\+srv)?://": "a MongoDB URI starts with mongodb:// or mongodb+srv://",
    _ENV_NAME: "give the NAME of an environment variable (letters, digits and '_', "
    "not starting with a digit), not its value",
    '^[^/\\\\. "$]{1,63}$': 'a database name has 1 to 63 characters and none of / \\ . space " $',
    "^[^.$][^.]*(\\.[^.$][^.]*)*$": "a field path is names separated by '.' (e.g. "
    "emergency_contact.phone), none empty or starting with '$'",
}
_NAME_KINDS = {"endpoints": "endpoint", "flows": "flow", "hooks": "hook"}
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
        instance = error.instance if isinstance(error.instance, dict) else {}
        missing = [key for key in _expected(error) if key not in instance]
        return [loaded.issue(path, f"missing required key '{key}'") for key in missing]
    if "propertyNames" in error.schema_path:
        return [_bad_name(loaded, error, path)]
    if validator == "oneOf" and _is_exactly_one_of_required(error):
        if not isinstance(error.instance, dict):
            return []  # the type error on the same node says it all
        keys = " or ".join(opt["required"][0] for opt in _expected(error))
        return [loaded.issue(path, f"needs exactly one of {keys}")]
    hidden = bool(path) and path[-1] in _HIDDEN_VALUE_KEYS
    return [loaded.issue(path, _message(error, hidden=hidden))]


def _unknown_keys(loaded: LoadedYaml, error: ValidationError, path: list[Any]) -> list[ConfigIssue]:
    allowed = sorted(_schema_of(error).get("properties", {}))
    instance = error.instance if isinstance(error.instance, dict) else {}
    issues = []
    for key in instance:
        if key in allowed:
            continue
        message = _SECRET_KEYS.get(str(key).lower())
        if isinstance(key, bool):
            message = (
                f"unknown key {str(key).lower()} (YAML reads an unquoted on/off/yes/no "
                "key as true/false)"
            )
        if message is not None and path[:1] == ["endpoints"]:
            message = _NO_LITERAL_URI
        if path == ["masking"] and str(key).lower() in ("key", "secret", "password"):
            message = _NO_LITERAL_KEY
        if message is None:
            message = f"unknown key '{key}'"
            close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
            if close:
                message += f"; did you mean '{close[0]}'?"
            elif allowed:
                message += f" (allowed: {', '.join(allowed)})"
        issues.append(loaded.issue([*path, key], message, key=True))
    return issues


def _bad_name(loaded: LoadedYaml, error: ValidationError, path: list[Any]) -> ConfigIssue:
    """A key of endpoints/flows/hooks that is not a valid name, located at the key itself."""
    kind = _NAME_KINDS.get(str(path[-1]) if path else "", "key") + " name"
    if path and path[-1] == "mask":
        kind = "field path"
    hint = _PATTERN_HINTS.get(
        str(_expected(error)), _PATTERN_HINTS["^[A-Za-z][A-Za-z0-9_-]{0,62}$"]
    )
    name = error.instance
    message = f"{kind} {_show(name)} is not valid: {hint}"
    return loaded.issue([*path, str(name)], message, key=True)


def _message(error: ValidationError, *, hidden: bool = False) -> str:
    validator = error.validator
    value = error.instance
    shown = "the value" if hidden else _show(value)
    if validator == "type":
        expected = _expected(error)
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(name, name) for name in names)
        return f"expected {wanted}, got {shown}{_example(error)}"
    if validator == "enum":
        options = [str(option) for option in _expected(error) if option is not None]
        message = f"{shown} is not one of {', '.join(options)}"
        close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
        return message + (f"; did you mean '{close[0]}'?" if close else "")
    if validator == "const":
        return f"must be {_expected(error)!r}, got {shown}"
    if validator == "pattern":
        hint = _PATTERN_HINTS.get(str(_expected(error)))
        if hint is None:
            hint = _schema_of(error).get("description", "unexpected format")
        return f"{shown} is not valid: {hint}"
    if validator == "minimum":
        return f"{shown} is too small (minimum {_expected(error)})"
    if validator == "exclusiveMinimum":
        return f"{shown} is too small (must be more than {_expected(error)})"
    if validator == "maximum":
        return f"{shown} is too large (maximum {_expected(error)})"
    if validator in ("minItems", "minProperties"):
        count = _expected(error)
        return f"needs at least {count} entr{'y' if count == 1 else 'ies'}"
    if validator == "minLength":
        return "must not be empty"
    if validator == "uniqueItems":
        return f"{_first_repeat(value)} is listed twice; list each entry once"
    return str(error.message)


def _first_repeat(items: Any) -> str:
    seen: list[Any] = []
    for item in items if isinstance(items, list) else []:
        if item in seen:
            return _show(item)
        seen.append(item)
    return "an entry"


def _example(error: ValidationError) -> str:
    """` (e.g. 15m)` from the schema's examples, in YAML flow style."""
    examples = _schema_of(error).get("examples")
    if not examples:
        return ""
    return f" (e.g. {_yaml_flow(examples[0])})"


def _yaml_flow(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(_yaml_flow(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_yaml_flow(item)}" for key, item in value.items()) + "}"
    return str(value)


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
