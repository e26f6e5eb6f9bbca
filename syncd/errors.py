"""Exceptions that reach the user, each mapped to an exit code of SPEC §3.

Every message says what happened and what to do next; none carries a secret.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_REFUSED = 3


class SyncdError(Exception):
    """An expected failure: printed as one message, no traceback."""

    exit_code = EXIT_FAILED

    def lines(self) -> list[str]:
        """The message as the CLI prints it, each line after `syncd: `."""
        return [str(self)]


class UsageError(SyncdError):
    exit_code = EXIT_USAGE


class Refused(SyncdError):
    """Nothing was written: drift, a protected endpoint without confirmation, same database."""

    exit_code = EXIT_REFUSED


class SecretError(SyncdError):
    """A secret (URI or password) could not be read. The message never holds the value."""

    exit_code = EXIT_FAILED


class EndpointUnreachable(SyncdError):
    """One line per endpoint that could not be used: which, its URI (redacted), the cause in
    plain words and what to do (syncd.unreachable)."""

    exit_code = EXIT_FAILED

    def __init__(self, *lines: str) -> None:
        super().__init__("\n".join(lines))

    def lines(self) -> list[str]:
        return str(self).splitlines()
