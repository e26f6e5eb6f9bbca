"""Read secrets (connection strings, passwords) only when they are needed, and redact them.

No function here puts a secret value in an exception message or a log line.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

from syncd.config.model import SecretRef
from syncd.errors import SecretError

_CREDENTIALS = re.compile(r"(?P<scheme>mongodb(?:\+srv)?://)(?P<userinfo>[^@/\s]+)@", re.IGNORECASE)
_SENSITIVE_PARAMS = re.compile(
    r"(?P<key>(?:password|authMechanismProperties|tlsCertificateKeyFilePassword)=)[^&\s]*",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """Replace credentials in any MongoDB URI inside `text` with `***`."""
    text = _CREDENTIALS.sub(r"\g<scheme>***@", text)
    return _SENSITIVE_PARAMS.sub(r"\g<key>***", text)


def uri_has_credentials(uri: str) -> bool:
    return bool(_CREDENTIALS.search(uri)) or bool(_SENSITIVE_PARAMS.search(uri))


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
        value = os.environ.get(ref.value)
        if not value:
            raise SecretError(
                f"{what}: environment variable {ref.value} is not set or empty; export it"
            )
        return value.strip()
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
    """Run the user's own command from their config; stderr is swallowed, it may hold secrets."""
    try:
        done = subprocess.run(  # noqa: S602 - the command is the operator's own config line
            ref.value,
            shell=True,
            capture_output=True,
            text=True,
            timeout=ref.timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SecretError(
            f"{what}: uri_command did not finish within {ref.timeout:g} s; "
            "run it by hand to check it (e.g. are you logged in?)"
        ) from None
    if done.returncode != 0:
        raise SecretError(
            f"{what}: uri_command failed with exit code {done.returncode}; "
            "run it by hand to see its error (its output is not shown here, it may hold secrets)"
        )
    lines = [line.strip() for line in done.stdout.splitlines() if line.strip()]
    if not lines:
        raise SecretError(f"{what}: uri_command printed nothing on stdout")
    return lines[-1]
