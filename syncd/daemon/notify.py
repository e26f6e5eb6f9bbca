"""The systemd notify protocol (sd_notify(3)) with the standard library.

One AF_UNIX datagram per message to `$NOTIFY_SOCKET` (a path, or an abstract socket
written `@name`). Silent when the variable is unset: outside systemd nothing listens.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

log = logging.getLogger("syncd.daemon")


# systemd's sd_notify blocks on a full queue; we wait this long at most, then drop.
SEND_TIMEOUT_SECONDS = 1.0
# Messages that change what systemd thinks of the service: each waits its full time even
# when the receiver was found stalled (STATUS and WATCHDOG then give up at once).
STATE_FIELDS = ("READY=1", "RELOADING=1", "STOPPING=1")


class Notifier:
    def __init__(
        self, environ: Mapping[str, str] | None = None, *, timeout: float = SEND_TIMEOUT_SECONDS
    ) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        if address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_seconds = _watchdog_seconds(env)
        self.timeout = timeout
        self._stalled = False  # the last send timed out: the receiver stopped reading
        self._warned = False

    @property
    def enabled(self) -> bool:
        return bool(self.address)

    def send(self, *fields: str) -> None:
        """Send `KEY=VALUE` fields as one message; a failure is logged once, never raised.

        A receiver that reads slower than we send (the kernel queues about 10 datagrams)
        makes the send wait for room, at most `timeout` seconds, as systemd's own
        sd_notify waits: dropping would lose STOPPING=1 or READY=1. Once a wait ran out,
        STATUS and WATCHDOG messages give up at once until a send succeeds again, so a
        receiver that stopped reading costs a job or a stop one bounded wait, not one each.
        """
        if not self.address:
            return
        message = "\n".join(field.replace("\n", " ") for field in fields).encode()
        wait = self.timeout if not self._stalled or set(fields) & set(STATE_FIELDS) else 0.0
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(wait)  # 0: non-blocking
                sock.sendto(message, self.address)
        except (TimeoutError, BlockingIOError):
            self._stalled = True
            self._warn(f"the receiver is not reading; dropped {fields[0].split('=')[0]}")
        except OSError as exc:
            self._warn(exc.strerror or str(exc))
        else:
            self._stalled = False

    def _warn(self, why: str) -> None:
        if not self._warned:
            self._warned = True
            log.warning("sd_notify failed: %s", why)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # systemd >= 253 wants the monotonic time with RELOADING=1 (Type=notify-reload).
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config")

    def stopping(self, status: str) -> None:
        self.send("STOPPING=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")


def _watchdog_seconds(env: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC), or None when not asked.

    As sd_watchdog_enabled(3): WATCHDOG_PID, when set, must be our pid.
    """
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", "0"))
    except ValueError:
        return None
    return usec / 2_000_000 if usec > 0 else None
