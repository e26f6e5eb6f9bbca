"""Read secrets (connection strings, passwords) only when they are needed, and redact them.

No function here puts a secret value in an exception message or a log line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from syncd.config.model import SecretRef
from syncd.errors import SecretError

# Up to the last "@" of the URI: an unescaped "@" or "/" in a password must not leak its tail.
_CREDENTIALS = re.compile(r"(?P<scheme>mongodb(?:\+srv)?://)(?P<userinfo>\S+)@", re.IGNORECASE)
_SENSITIVE_PARAMS = re.compile(
    r"(?P<key>(?:password|authMechanismProperties|tlsCertificateKeyFilePassword)=)[^&\s]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Replace credentials in any MongoDB URI inside `text` with `***`."""
    text = _CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _SENSITIVE_PARAMS.sub(r"\g<key>***", text)


def uri_has_credentials(uri: str) -> bool:
    """A user name or password in the URI (before the query), or a secret query parameter."""
    before_query = uri.split("://", 1)[-1].split("?", 1)[0]
    return "@" in before_query or bool(_SENSITIVE_PARAMS.search(uri))


def uri_database(uri: str) -> str | None:
    """The database named in the URI path, if any."""
    after_scheme = uri.split("://", 1)[-1]
    hosts_and_path = after_scheme.rsplit("@", 1)[-1]
    if "/" not in hosts_and_path:
        return None
    path = hosts_and_path.split("/", 1)[1].split("?", 1)[0]
    return path or None


def uri_hosts(uri: str) -> list[str]:
    """host:port entries of the URI, lower-cased, default port filled in."""
    after_scheme = uri.split("://", 1)[-1]
    hosts = after_scheme.rsplit("@", 1)[-1].split("/", 1)[0].split("?", 1)[0]
    result = []
    for host in hosts.split(","):
        parsed = urlsplit(f"//{host}")
        name = (parsed.hostname or host).lower()
        port = parsed.port if parsed.port is not None else 27017
        result.append(f"{name}:{port}")
    return sorted(result)


def resolve(ref: SecretRef, *, what: str) -> str:
    """The secret's value. `what` names it in messages, e.g. "endpoint 'production' URI"."""
    if ref.kind == "literal":
        return ref.value
    if ref.kind == "env":
        value = os.environ.get(ref.value, "").strip()
        if not value:
            raise SecretError(
                f"{what}: environment variable {ref.value} is not set or empty; export it"
            )
        return value
    if ref.kind == "file":
        return _read_secret_file(Path(ref.value), what=what)
    return _run_secret_command(ref, what=what)


def _read_secret_file(path: Path, *, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretError(f"{what}: file {path} does not exist") from None
    except OSError as exc:
        raise SecretError(f"{what}: cannot read {path}: {exc.strerror}") from None
    value = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not value:
        raise SecretError(f"{what}: file {path} is empty")
    return value


def _run_secret_command(ref: SecretRef, *, what: str) -> str:
    """Run the user's own command from their config; stderr is swallowed, it may hold secrets.

    It runs in its own process group so a timeout kills what it started too (a hung CLI
    behind `sh -c` would otherwise outlive us).
    """
    with subprocess.Popen(  # noqa: S602 - the command is the operator's own config line
        ref.value,
        shell=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, _ = process.communicate(timeout=ref.timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise SecretError(
                f"{what}: uri_command did not finish within {ref.timeout:g} s; "
                "run it by hand to check it (e.g. are you logged in?)"
            ) from None
    if process.returncode != 0:
        raise SecretError(
            f"{what}: uri_command failed with exit code {process.returncode}; "
            "run it by hand to see its error (its output is not shown here, it may hold secrets)"
        )
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    if not lines:
        raise SecretError(f"{what}: uri_command printed nothing on stdout")
    return lines[-1]


def _kill_group(process: subprocess.Popen[str]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.kill()
    process.wait()
