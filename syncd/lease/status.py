"""What `syncd status` says about an endpoint's write lease: free, held (by whom), expired."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo.errors import PyMongoError

from syncd.endpoints import Connected
from syncd.lease.database import database_holder
from syncd.lease.holder import Holder, utc_text
from syncd.lease.local import local_holder
from syncd.mongo.retry import server_reason
from syncd.state.statedir import StateDir


@dataclass(frozen=True)
class LeaseState:
    kind: str  # the endpoint's `lease:` setting
    holder: Holder | None = None
    now: datetime | None = None  # the server's time, for a database lease
    error: str | None = None  # the lease document could not be read

    @property
    def expired(self) -> bool:
        expires = self.holder.expires if self.holder is not None else None
        return expires is not None and self.now is not None and expires <= self.now

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "holder": self.holder.as_json(self.now) if self.holder is not None else None,
            "summary": self.line(),
        }
        if self.error is not None:
            data["error"] = self.error
        return data

    def line(self) -> str | None:
        """One line for the status text, or None when there is nothing to say."""
        if self.error is not None:
            return f"write lease not readable: {self.error}"
        if self.holder is None:
            return None
        if self.expired and self.holder.expires is not None:
            return (
                f"the write lease of {self.holder.describe()} expired at "
                f"{utc_text(self.holder.expires)}: that run stopped without releasing it; the "
                "next writer takes it over"
            )
        text = f"being written by {self.holder.describe()}"
        if self.holder.expires is not None:
            text += f"; lease expires at {utc_text(self.holder.expires)} unless renewed"
        return text


def lease_state(state: StateDir, target: Connected) -> LeaseState:
    """The database lease where there is one, else this machine's lease file."""
    kind = target.endpoint.lease
    local = local_holder(state, target.name)
    if kind == "local":
        return LeaseState(kind, local)
    try:
        holder, now = database_holder(target.db)
    except PyMongoError as exc:
        return LeaseState(kind, local, error=server_reason(exc))
    if holder is None:
        return LeaseState(kind, local)
    return LeaseState(kind, holder, now)
