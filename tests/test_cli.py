"""The `syncd` command line: help, where the config comes from, usage errors, the real script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest

from syncd import __version__
from syncd.cli import ACTIONS, main
from tests.engine_kit import syncd

REPO = Path(__file__).resolve().parent.parent
SCRIPT = Path(sys.executable).parent / "syncd"

VALID = dedent("""\
    version: 1
    endpoints:
      local: {uri: "mongodb://localhost:27017/dev"}
      production: {uri_env: MONGODB_URI, protected: true}
    flows:
      from_production: {source: production, target: local}
    collections:
      - name: users
    """)
OK = "OK (2 endpoints, 1 flows, 1 collection rules, 0 schedules)"

COMMANDS = [
    ["validate"],
    ["status"],
    ["sync"],
    ["verify"],
    ["diff"],
    ["backup"],
    ["backup", "create"],
    ["backup", "list"],
    ["backup", "restore"],
    ["backup", "import"],
    ["run"],
    ["demo"],
]


@pytest.fixture(autouse=True)
def _no_config_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYNCD_CONFIG", raising=False)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(path: Path, text: str = VALID) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["--help"], capsys)
    assert (code, err) == (0, "")
    assert out.startswith("usage: syncd ")
    for command in ("validate", "status", "sync", "verify", "diff", "backup", "run", "demo"):
        assert f"\n    {command} " in out


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run([*command, "--help"], capsys)
    assert (code, err) == (0, "")
    assert out.startswith(f"usage: syncd {' '.join(command)} ")
    assert "-c CONFIG, --config CONFIG" in out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["--version"], capsys)
    assert (code, out) == (0, f"syncd {__version__}\n")


@pytest.mark.parametrize(
    "argv",
    [
        ["-c", "{path}", "validate"],
        ["validate", "-c", "{path}"],
        ["--config", "{path}", "validate"],
        ["validate", "--config={path}"],
    ],
    ids=["short-before", "short-after", "long-before", "long-after"],
)
def test_config_option_before_or_after_the_command(
    argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "mine.yaml")
    code, out, err = run([arg.format(path=path) for arg in argv], capsys)
    assert (code, out, err) == (0, f"{path}: {OK}\n", "")


def test_config_option_after_the_command_wins(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = write(tmp_path / "first.yaml", "oops"), write(tmp_path / "second.yaml")
    code, out, _ = run(["-c", str(first), "validate", "-c", str(second)], capsys)
    assert (code, out) == (0, f"{second}: {OK}\n")


def test_syncd_config_environment_variable_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path / "from-env.yaml")
    monkeypatch.setenv("SYNCD_CONFIG", str(path))
    assert run(["validate"], capsys) == (0, f"{path}: {OK}\n", "")


def test_config_option_beats_syncd_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SYNCD_CONFIG", str(tmp_path / "missing.yaml"))
    path = write(tmp_path / "given.yaml")
    assert run(["validate", "-c", str(path)], capsys) == (0, f"{path}: {OK}\n", "")


@pytest.mark.parametrize("environment", [None, ""], ids=["unset", "empty"])
def test_default_config_is_syncd_yaml_in_the_working_directory(
    environment: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if environment is not None:
        monkeypatch.setenv("SYNCD_CONFIG", environment)
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "syncd.yaml")
    assert run(["validate"], capsys) == (0, f"syncd.yaml: {OK}\n", "")


def test_missing_default_config_says_how_to_give_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(["validate"], capsys)
    assert (code, out) == (2, "")
    assert err == (
        "syncd.yaml:1:1: (top): config file not found; pass -c FILE or set SYNCD_CONFIG\n"
        "syncd: config has 1 error\n"
    )


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        (["bogus"], "argument COMMAND: invalid choice: 'bogus'"),
        ([], "the following arguments are required: COMMAND"),
        (["validate", "--bogus"], "unrecognized arguments: --bogus"),
        (["backup"], "the following arguments are required: ACTION"),
        (["sync"], "the following arguments are required: flow"),
        (["sync", "f", "--drift", "ignore"], "argument --drift: invalid choice: 'ignore'"),
        (["-c"], "argument -c/--config: expected one argument"),
    ],
    ids=[
        "unknown-command",
        "no-command",
        "unknown-option",
        "backup-no-action",
        "sync-no-flow",
        "bad-drift",
        "config-without-file",
    ],
)
def test_usage_errors_exit_2(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(argv, capsys)
    assert (code, out) == (2, "")
    assert err.startswith("usage: syncd")
    assert f"error: {complaint}" in err


def _script_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SYNCD_CONFIG", "MONGODB_URI")}
    env.pop("SYNCD_RESET_PASSWORD", None)
    return env


def test_console_script_validates_the_example_config() -> None:
    assert SCRIPT.is_file(), f"console script not installed next to {sys.executable}"
    done = subprocess.run(
        [str(SCRIPT), "validate", "-c", "config/syncd.example.yaml"],
        cwd=REPO,
        env=_script_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == (
        "config/syncd.example.yaml: OK (2 endpoints, 2 flows, 21 collection rules, 4 schedules)\n"
    )


def test_console_script_reports_a_broken_config_without_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", VALID.replace("target: local}", "target: locl}"))
    done = subprocess.run(
        [str(SCRIPT), "validate", "-c", str(path)],
        env=_script_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        f"{path}:6:49: flows.from_production.target: unknown endpoint 'locl'; "
        "did you mean 'local'?\nsyncd: config has 1 error\n"
    )


def _explode(config: object, args: object) -> int:
    raise KeyError("no such key in the plan")


def test_unexpected_error_says_what_and_shows_the_traceback_at_debug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ACTIONS, "validate", "tests.test_cli:_explode")
    config = write(tmp_path / "syncd.yaml")

    quiet = syncd(capsys, config, "validate")
    debug = syncd(capsys, config, "validate", "--log-level", "debug")

    for outcome in (quiet, debug):
        assert outcome.code == 1
        assert "syncd: unexpected error: KeyError: 'no such key in the plan'" in outcome.err
        assert "--log-level debug" in outcome.err
    assert "Traceback" not in quiet.err
    assert "Traceback (most recent call last)" in debug.err
    assert "in _explode" in debug.err


def test_a_missing_action_module_is_a_failure_with_its_name_not_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(ACTIONS, "validate", "syncd.actions.nowhere:run")

    outcome = syncd(capsys, write(tmp_path / "syncd.yaml"), "validate")

    assert outcome.code == 1
    assert "ModuleNotFoundError: No module named 'syncd.actions.nowhere'" in outcome.err
