"""The one exception the backup layer raises for things a user can act on."""

from __future__ import annotations

from syncd.errors import SyncdError


class BackupError(SyncdError):
    """A backup could not be written, read or found (exit code 1).

    The message is meant for the user as is: it says what went wrong and what to do next,
    and never carries a URI or a secret.
    """
