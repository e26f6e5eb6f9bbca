"""Every read syncd makes goes to the primary, whatever read preference the URI names.

Atlas hands out connection strings with `readPreference=secondaryPreferred` (or
`nearest`, for analytics nodes). A sync must not read from a secondary: a resume point
taken on one member and a scan or a fetch by `_id` on another that lags would remember old
versions as current and lose the writes in between for good; a backup or a verification
would describe a past state as the present one. So the client syncd opens for an
endpoint is given the URI without its read preference (and the tags and staleness that
only mean something with one), and syncd says so once per endpoint and preference.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger("syncd.endpoints")

READ_PREFERENCE_OPTIONS = ("readpreference", "readpreferencetags", "maxstalenessseconds")

_said: set[tuple[str, str]] = set()
_said_lock = threading.Lock()


def on_primary(uri: str, endpoint: str) -> str:
    """`uri` without read preference options (pymongo then reads from the primary); logs
    once when the URI asked for another member."""
    base, mark, query = uri.partition("?")
    if not mark:
        return uri
    kept, asked = [], ""
    for part in query.split("&"):
        key, _, value = part.partition("=")
        if key.lower() not in READ_PREFERENCE_OPTIONS:
            kept.append(part)
        elif key.lower() == "readpreference":
            asked = value
    if asked and asked.lower() != "primary":
        _say_once(endpoint, asked)
    return base + (f"?{'&'.join(kept)}" if kept else "")


def _say_once(endpoint: str, asked: str) -> None:
    with _said_lock:
        if (endpoint, asked) in _said:
            return
        _said.add((endpoint, asked))
    log.warning(
        f"endpoint '{endpoint}': the URI asks for readPreference={asked}; syncd reads from "
        "the primary all the same (a secondary may lag: a sync, verification or backup "
        "read there would take old versions for current)",
        extra={"endpoint": endpoint, "read_preference": asked},
    )
