"""Secrets: URIs and passwords are read only when needed, and never shown in a message."""

from __future__ import annotations

import time
from pathlib import Path
from textwrap import dedent

import pytest

from syncd.cli import main
from syncd.config import load_config
from syncd.config.model import SecretRef
from syncd.config.secrets import redact, resolve, uri_database, uri_has_credentials, uri_hosts
from syncd.errors import SecretError

URI = "mongodb://admin:S3cr3t-Pa55@db.example.com:27017/valkyria_ecm_production"
WHAT = "endpoint 'production' URI"


def config_with_production(tmp_path: Path, source: str) -> Path:
    """A valid config whose production endpoint reads its URI from `source` (one YAML line)."""
    path = tmp_path / "syncd.yaml"
    path.write_text(
        dedent("""\
            version: 1
            endpoints:
              local: {uri: "mongodb://localhost:27017/dev"}
              production:
                protected: true
                database: valkyria_ecm_production
            """)
        + "".join(f"    {line}\n" for line in source.splitlines())
        + dedent("""\
            flows:
              from_production: {source: production, target: local}
            collections:
              - name: users
            """),
        encoding="utf-8",
    )
    return path


# --- uri_env ---


def test_env_var_is_read_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCD_TEST_URI", f"  {URI}\n")
    assert resolve(SecretRef("env", "SYNCD_TEST_URI"), what=WHAT) == URI


@pytest.mark.parametrize("value", [None, "", "   \n"], ids=["unset", "empty", "blank"])
def test_missing_or_blank_env_var_is_an_error_naming_it(
    value: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is None:
        monkeypatch.delenv("SYNCD_TEST_URI", raising=False)
    else:
        monkeypatch.setenv("SYNCD_TEST_URI", value)
    with pytest.raises(SecretError) as caught:
        resolve(SecretRef("env", "SYNCD_TEST_URI"), what=WHAT)
    assert str(caught.value) == (
        f"{WHAT}: environment variable SYNCD_TEST_URI is not set or empty; export it"
    )
    assert caught.value.exit_code == 1


def test_literal_is_returned_as_written() -> None:
    assert resolve(SecretRef("literal", "mongodb://localhost/dev"), what=WHAT) == (
        "mongodb://localhost/dev"
    )


# --- uri_file ---


def test_file_gives_its_first_line(tmp_path: Path) -> None:
    secret = tmp_path / "mongodb-uri"
    secret.write_text(f"\n  {URI}  \nsecond line\n", encoding="utf-8")
    assert resolve(SecretRef("file", str(secret)), what=WHAT) == URI


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "mongodb-uri"
    secret.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(SecretError) as caught:
        resolve(SecretRef("file", str(secret)), what=WHAT)
    assert str(caught.value) == f"{WHAT}: file {secret} is empty"


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    secret = tmp_path / "nope"
    with pytest.raises(SecretError) as caught:
        resolve(SecretRef("file", str(secret)), what=WHAT)
    assert str(caught.value) == f"{WHAT}: file {secret} does not exist"


def test_unreadable_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SecretError) as caught:
        resolve(SecretRef("file", str(tmp_path)), what=WHAT)
    assert str(caught.value) == f"{WHAT}: cannot read {tmp_path}: Is a directory"


# --- uri_command ---


def test_command_gives_its_last_stdout_line_and_ignores_stderr() -> None:
    command = f"echo 'fetching...'; echo 'warning: old CLI' >&2; echo '{URI}'; echo"
    assert resolve(SecretRef("command", command), what=WHAT) == URI


def test_command_reads_no_stdin() -> None:
    """A CLI that asks for a login must not hang on the daemon's stdin; it sees end of input."""
    command = "read answer || echo mongodb://localhost/from-eof"
    assert resolve(SecretRef("command", command, 10), what=WHAT) == "mongodb://localhost/from-eof"


def test_failing_command_hides_its_output(tmp_path: Path) -> None:
    command = "echo 'password=Fake-S3cret-42' >&2; echo 'mongodb://u:Fake-S3cret-42@h/x'; exit 3"
    with pytest.raises(SecretError) as caught:
        resolve(SecretRef("command", command), what=WHAT)
    message = str(caught.value)
    assert message == (
        f"{WHAT}: uri_command failed with exit code 3; run it by hand to see its error "
        "(its output is not shown here, it may hold secrets)"
    )
    assert "Fake-S3cret-42" not in message


def test_silent_command_is_an_error() -> None:
    with pytest.raises(SecretError) as caught:
        resolve(SecretRef("command", "true"), what=WHAT)
    assert str(caught.value) == f"{WHAT}: uri_command printed nothing on stdout"


def test_command_timeout_from_config_stops_a_hung_command(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    path = config_with_production(
        tmp_path,
        f'uri_command: "sleep 60 & echo $! > {pid_file}; wait"\nuri_command_timeout: 0.3',
    )
    ref = load_config(path).endpoints["production"].uri
    assert (ref.kind, ref.timeout) == ("command", 0.3)
    with pytest.raises(SecretError) as caught:
        resolve(ref, what=WHAT)
    assert str(caught.value) == (
        f"{WHAT}: uri_command did not finish within 0.3 s; "
        "run it by hand to check it (e.g. are you logged in?)"
    )
    # What the command started is stopped too, not left running behind the daemon.
    child = int(pid_file.read_text(encoding="utf-8"))
    deadline = time.monotonic() + 10
    while _running(child):
        assert time.monotonic() < deadline, f"uri_command's child {child} still runs"
        time.sleep(0.02)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"  # a zombie has exited; only its parent (now init) has to reap it


def test_command_timeout_defaults_to_30_seconds(tmp_path: Path) -> None:
    path = config_with_production(tmp_path, "uri_command: heroku config:get MONGODB_URI")
    assert load_config(path).endpoints["production"].uri == SecretRef(
        "command", "heroku config:get MONGODB_URI", 30.0
    )


# --- validate never needs the secrets ---


@pytest.mark.parametrize(
    "source",
    [
        "uri_env: SYNCD_TEST_ABSENT_URI",
        "uri_file: /nonexistent/syncd/mongodb-uri",
        "uri_command: touch {marker}; exit 1",
    ],
    ids=["env", "file", "command"],
)
def test_validate_succeeds_without_reading_the_secret(
    source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    marker = tmp_path / "command-ran"
    monkeypatch.delenv("SYNCD_TEST_ABSENT_URI", raising=False)
    path = config_with_production(tmp_path, source.format(marker=marker))
    assert main(["validate", "-c", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith(f"{path}: OK")
    assert not marker.exists()


def test_hook_password_sources_are_not_read_by_validate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SYNCD_TEST_ABSENT_PASSWORD", raising=False)
    path = tmp_path / "syncd.yaml"
    path.write_text(
        dedent("""\
            version: 1
            endpoints:
              local: {uri: "mongodb://localhost:27017/dev"}
              production: {uri_env: SYNCD_TEST_ABSENT_URI, protected: true}
            flows:
              to_production: {source: local, target: production, after: [by_env, by_file]}
            collections: [{name: users}]
            hooks:
              by_env:
                {collection: users, match_field: email, password_field: encrypted_password,
                 password_env: SYNCD_TEST_ABSENT_PASSWORD, users: [admin@example.com]}
              by_file:
                {collection: users, match_field: email, password_field: encrypted_password,
                 password_file: /nonexistent/reset-password, users: [admin@example.com]}
            """),
        encoding="utf-8",
    )
    hooks = load_config(path).hooks
    assert hooks["by_env"].password == SecretRef("env", "SYNCD_TEST_ABSENT_PASSWORD")
    assert hooks["by_file"].password == SecretRef("file", "/nonexistent/reset-password")


# --- redaction and URI parts ---


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        pytest.param(
            URI, "mongodb://***@db.example.com:27017/valkyria_ecm_production", id="userinfo"
        ),
        pytest.param(
            "mongodb+srv://app:S3cr3t@cluster0.ab1cd.mongodb.net/prod?retryWrites=true&w=majority",
            "mongodb+srv://***@cluster0.ab1cd.mongodb.net/prod?retryWrites=true&w=majority",
            id="srv",
        ),
        pytest.param(
            "mongodb://db.example.com/prod?authSource=admin&password=S3cr3t&ssl=true",
            "mongodb://db.example.com/prod?authSource=admin&password=***&ssl=true",
            id="password-parameter",
        ),
        pytest.param(
            "mongodb://h/x?authMechanism=MONGODB-AWS&authMechanismProperties=AWS_SESSION_TOKEN:tok",
            "mongodb://h/x?authMechanism=MONGODB-AWS&authMechanismProperties=***",
            id="aws-session-token",
        ),
        pytest.param(
            "MONGODB://Admin:S3cr3t@H1,h2:27018/db", "MONGODB://***@H1,h2:27018/db", id="upper-case"
        ),
        pytest.param(
            "mongodb://admin:p@ss/w0rd@db.example.com/prod",
            "mongodb://***@db.example.com/prod",
            id="unescaped-at-and-slash",
        ),
        pytest.param(
            "cannot reach 'mongodb://a:S3cr3t@h1/x' nor 'mongodb://b:S3cr3t@h2/y' (timeout)",
            "cannot reach 'mongodb://***@h1/x' nor 'mongodb://***@h2/y' (timeout)",
            id="two-uris-in-a-message",
        ),
        pytest.param(
            "mongodb://localhost:27017/dev", "mongodb://localhost:27017/dev", id="no-credentials"
        ),
    ],
)
def test_redact_hides_credentials(text: str, redacted: str) -> None:
    assert redact(text) == redacted
    assert "S3cr3t" not in redact(text)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (URI, True),
        ("mongodb+srv://app:pw@cluster0.example.net/prod", True),
        ("mongodb://app@db.example.com/prod?authMechanism=MONGODB-X509", True),
        ("mongodb://db.example.com/prod?password=pw", True),
        ("mongodb://admin:pa/ss@db.example.com/prod", True),
        ("mongodb://db.example.com:27017/prod?appName=ops@example", False),
        ("mongodb://localhost:27017/dev", False),
    ],
)
def test_uri_has_credentials(uri: str, expected: bool) -> None:
    assert uri_has_credentials(uri) is expected


@pytest.mark.parametrize(
    ("uri", "database"),
    [
        (URI, "valkyria_ecm_production"),
        ("mongodb://localhost:27017/dev?directConnection=true", "dev"),
        ("mongodb+srv://app:pw@cluster0.example.net/prod?retryWrites=true", "prod"),
        ("mongodb://h1:27017,h2:27018/app?replicaSet=rs0", "app"),
        ("mongodb://localhost:27017", None),
        ("mongodb://localhost:27017/", None),
        ("mongodb://localhost:27017/?replicaSet=rs0", None),
    ],
)
def test_uri_database(uri: str, database: str | None) -> None:
    assert uri_database(uri) == database


@pytest.mark.parametrize(
    ("uri", "hosts"),
    [
        (URI, ["db.example.com:27017"]),
        (
            "mongodb://H2.Example.com:27018,h1.example.com/app",
            ["h1.example.com:27017", "h2.example.com:27018"],
        ),
        ("mongodb+srv://app:pw@Cluster0.example.net/prod", ["cluster0.example.net:27017"]),
        ("mongodb://localhost", ["localhost:27017"]),
        ("mongodb://127.0.0.1:40001/?directConnection=true", ["127.0.0.1:40001"]),
    ],
)
def test_uri_hosts(uri: str, hosts: list[str]) -> None:
    assert uri_hosts(uri) == hosts


def test_command_failures_never_show_the_uri_it_printed() -> None:
    failures = [
        SecretRef("command", f"echo '{URI}' >&2; echo '{URI}'; exit 1"),
        SecretRef("command", f"echo '{URI}' >&2; echo '{URI}'; sleep 60", 0.2),
    ]
    for ref in failures:
        with pytest.raises(SecretError) as caught:
            resolve(ref, what=WHAT)
        assert "S3cr3t" not in str(caught.value)
