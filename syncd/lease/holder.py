"""Who holds a write lease, in words for messages, status and the waiting line.

A holder is what a lease records about the run writing a target: machine, process, user,
job and flow, since when, and (a database lease) until when unless renewed. None of it is
a secret: no URI, no credentials.
"""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from syncd.errors import Refused

Where = Literal["database", "state_dir"]


def this_host() -> str:
    return socket.gethostname() or "unknown host"


def this_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user with no passwd entry
        return f"uid {os.getuid()}"


def utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class Holder:
    host: str
    pid: int | None
    job: str
    where: Where
    flow: str | None = None
    user: str | None = None
    since: datetime | None = None
    expires: datetime | None = None  # database leases: taken over after this, unless renewed
    token: str = ""  # tells two runs apart where host and pid may repeat (containers)

    @classmethod
    def me(cls, *, job: str, flow: str | None, where: Where) -> Holder:
        return cls(this_host(), os.getpid(), job, where, flow, this_user())

    @classmethod
    def from_record(cls, record: dict[str, Any], where: Where) -> Holder:
        """From a lease document or lease file; missing or odd fields read as unknown."""
        pid = record.get("pid")
        return cls(
            host=str(record.get("host") or "unknown host"),
            pid=pid if isinstance(pid, int) else None,
            job=str(record.get("job") or "unknown job"),
            where=where,
            flow=record["flow"] if isinstance(record.get("flow"), str) else None,
            user=record["user"] if isinstance(record.get("user"), str) else None,
            since=_moment(record.get("acquired", record.get("since"))),
            expires=_moment(record.get("expires")),
            token=str(record.get("token") or ""),
        )

    def record(self) -> dict[str, Any]:
        """The fields a lease stores (times are the lease's own business)."""
        return {
            "host": self.host,
            "pid": self.pid,
            "user": self.user,
            "job": self.job,
            "flow": self.flow,
        }

    def describe(self) -> str:
        """`pid 4242 on host laptop (user ana, job 'manual sync', flow to_production) since …`"""
        where = "this machine" if self.where == "state_dir" else f"host {self.host}"
        who = f"pid {self.pid if self.pid is not None else '?'} on {where}"
        about = [f"user {self.user}"] if self.user else []
        about.append(f"job '{self.job}'")
        if self.flow:
            about.append(f"flow {self.flow}")
        text = f"{who} ({', '.join(about)})"
        if self.since is not None:
            text += f" since {utc_text(self.since)}"
        return text

    def as_json(self, now: datetime | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {**self.record(), "lease": self.where}
        data["since"] = self.since.isoformat(timespec="seconds") if self.since else None
        if self.expires is not None:
            data["expires"] = self.expires.isoformat(timespec="seconds")
            if now is not None:
                data["expired"] = self.expires <= now
        return data


class LeaseBusy(Refused):
    """The target endpoint is being written by another run (this machine or another)."""

    def __init__(self, endpoint: str, holder: Holder) -> None:
        super().__init__(
            f"'{endpoint}' is being written by {holder.describe()}; run again once it is "
            "done, or without --no-wait to wait for it"
        )
        self.endpoint = endpoint
        self.holder = holder


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None
