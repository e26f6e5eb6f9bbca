"""One writer per target database across machines: a lease document in the target itself.

The collection `_syncd_leases` holds at most one document, `_id: "writer"`: who writes
(host, pid, user, job, flow), since when (`acquired`) and until when (`expires`). Why it
is safe:

- Taking it is one conditional upsert: match `_id` *and* "expired", else insert. A live
  lease does not match, so the insert collides on `_id` (duplicate key) and the taker
  knows it is busy; two takers of an expired lease race on one document, and the server
  lets exactly one update match. No read-then-write window.
- Every time is the server's (`hello.localTime`, read just before each write), so the
  clocks of the machines never meet. (Comparing against `$$NOW` inside the server would
  be neater, but SecantusDB evaluates `$lt: ["$expires", "$$NOW"]` as false for any date.)
- A holder renews every quarter of the expiry (60 s by default, `SYNCD_LEASE_SECONDS`).
  Between two batches the run calls `check()`, which fails once the lease was taken over
  or has not been confirmed for half the expiry: the run stops before another machine
  can have taken the lease, since that needs the whole expiry to pass without renewal.
- A holder that dies stops renewing; the next writer takes the lease once it expired.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pymongo
from bson.codec_options import CodecOptions
from pymongo import ReadPreference, ReturnDocument, WriteConcern
from pymongo.collection import Collection
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError, OperationFailure, PyMongoError

from syncd import pause
from syncd.errors import SyncdError, UsageError
from syncd.lease.holder import Holder, LeaseBusy, utc_text
from syncd.mongo import server
from syncd.mongo.retry import UNAUTHORIZED_CODES, is_transient, server_reason, with_retries

log = logging.getLogger("syncd.lease")

COLLECTION = "_syncd_leases"
LEASE_ID = "writer"
SECONDS_ENV = "SYNCD_LEASE_SECONDS"
DEFAULT_SECONDS = 60.0
RENEW_EVERY = 0.25  # of the expiry, while renewals succeed
RETRY_EVERY = 1 / 12  # of the expiry, after a renewal failed
STALE_AFTER = 0.5  # of the expiry without a confirmed renewal: check() fails
MAX_POLL_SECONDS = 1.0
RELEASE_SECONDS = 5.0
OnWait = Callable[[Holder], None]


class LeaseLost(SyncdError):
    """The run's database lease was taken over or could not be renewed; it stopped writing."""


class LeaseUnwritable(SyncdError):
    """The target does not let syncd write its lease collection."""


def lease_seconds() -> float:
    """The expiry: 60 s, or SYNCD_LEASE_SECONDS (for tests, or a server farther away)."""
    text = os.environ.get(SECONDS_ENV, "").strip()
    if not text:
        return DEFAULT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0.5 <= seconds <= 3600:
        raise UsageError(
            f"{SECONDS_ENV}={text!r}: the lease expiry must be a number of seconds between "
            f"0.5 and 3600; unset it for the default ({DEFAULT_SECONDS:.0f} s)"
        )
    return seconds


def lease_collection(db: Database[Any]) -> Collection[dict[str, Any]]:
    """Majority writes (a lease a failover forgets would let two writers in), reads from the
    primary (a secondary's copy may be behind), whatever the endpoint's URI asks for."""
    return db.get_collection(
        COLLECTION,
        codec_options=CodecOptions(tz_aware=True, tzinfo=UTC),
        read_preference=ReadPreference.PRIMARY,
        write_concern=WriteConcern("majority"),
    )


def server_now(db: Database[Any]) -> datetime:
    """The server's clock (hello.localTime); this machine's only if the server does not say."""
    local = server.hello(db.client).get("localTime")
    if isinstance(local, datetime):
        return local if local.tzinfo is not None else local.replace(tzinfo=UTC)
    return datetime.now(UTC)


def database_holder(db: Database[Any]) -> tuple[Holder | None, datetime]:
    """The lease document's holder (expired or not) and the server's time now."""
    now = server_now(db)
    record = lease_collection(db).find_one({"_id": LEASE_ID})
    return (Holder.from_record(record, "database") if record else None), now


class DatabaseLease:
    """The lease of one target database, held from `acquire()` to `release()`."""

    def __init__(self, db: Database[Any], endpoint: str, holder: Holder, seconds: float) -> None:
        self.db, self.endpoint, self.holder, self.seconds = db, endpoint, holder, seconds
        self.coll = lease_collection(db)
        self.token = secrets.token_hex(12)
        self._confirmed = 0.0  # monotonic time before the last confirmed take or renewal
        self._lost: str | None = None
        self._last_error: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._tried = False  # a take was sent: the document may be ours from then on

    # -- taking it ----------------------------------------------------------------------

    def acquire(self, *, wait: bool, on_wait: OnWait | None = None) -> None:
        told: Holder | None = None
        poll = min(MAX_POLL_SECONDS, self.seconds / 4)
        while True:
            current = with_retries(self._try_take, what=f"take the write lease of {self.endpoint}")
            if current is None:
                break
            if not wait:
                raise LeaseBusy(self.endpoint, current)
            if on_wait is not None and (told is None or told.token != current.token):
                on_wait(current)
                told = current
            time.sleep(poll)
        self._renewer = threading.Thread(
            target=self._renew_loop, name=f"lease-{self.endpoint}", daemon=True
        )
        self._renewer.start()
        _held.add(self)
        pause.point("lease.taken")

    def _try_take(self) -> Holder | None:
        """None when this run now holds the lease; otherwise who does."""
        started = time.monotonic()
        self._tried = True
        now = server_now(self.db)
        fields = {
            **self.holder.record(),
            "token": self.token,
            "acquired": now,
            "renewed": now,
            "expires": now + timedelta(seconds=self.seconds),
        }
        try:
            before = self.coll.find_one_and_update(
                {"_id": LEASE_ID, "expires": {"$not": {"$gt": now}}},
                {"$set": fields},
                upsert=True,
                return_document=ReturnDocument.BEFORE,
            )
        except DuplicateKeyError:
            record = self.coll.find_one({"_id": LEASE_ID})
            if record is None:  # released between the two calls: try again
                return self._try_take()
            if record.get("token") != self.token:
                return Holder.from_record(record, "database")
            before = None  # a retried write that had gone through: it is ours
        except OperationFailure as exc:
            if is_transient(exc):
                raise
            raise self._unwritable(exc) from None
        self._confirmed = started
        if before is not None:
            previous = Holder.from_record(before, "database")
            expired = f" (expired {utc_text(previous.expires)})" if previous.expires else ""
            log.warning(
                f"took over the write lease of '{self.endpoint}' from "
                f"{previous.describe()}{expired}: that run stopped without releasing it",
                extra={"endpoint": self.endpoint},
            )
        return None

    def _unwritable(self, exc: OperationFailure) -> SyncdError:
        fix = (
            "check the endpoint's credentials and the user's roles (it must be allowed to "
            f"write {COLLECTION})"
            if exc.code in UNAUTHORIZED_CODES
            else f"make {COLLECTION} writable"
        )
        return LeaseUnwritable(
            f"cannot take the write lease in '{self.endpoint}' (collection {COLLECTION} of "
            f"database {self.db.name}): {server_reason(exc)}; {fix}, or set `lease: local` on "
            f"endpoint '{self.endpoint}' to keep the lease in this machine's state directory "
            "only (then only one machine may write it); nothing was written"
        )

    # -- keeping it ---------------------------------------------------------------------

    def _renew_loop(self) -> None:
        interval = self.seconds * RENEW_EVERY
        while not self._stop.wait(interval):
            try:
                self._renew()
            except PyMongoError as exc:
                self._last_error = server_reason(exc)
                log.warning(
                    f"could not renew the write lease of '{self.endpoint}': {self._last_error}",
                    extra={"endpoint": self.endpoint},
                )
                interval = self.seconds * RETRY_EVERY
                continue
            if self._lost is not None:
                return
            interval = self.seconds * RENEW_EVERY

    def _renew(self) -> None:
        started = time.monotonic()
        with pymongo.timeout(self.seconds * RENEW_EVERY):
            now = server_now(self.db)
            result = self.coll.update_one(
                {"_id": LEASE_ID, "token": self.token},
                {"$set": {"renewed": now, "expires": now + timedelta(seconds=self.seconds)}},
            )
            if result.matched_count:
                self._confirmed = started
                self._last_error = None
                return
            record = self.coll.find_one({"_id": LEASE_ID})
        self._lost = (
            f"it was taken over by {Holder.from_record(record, 'database').describe()}"
            if record is not None
            else f"its document in {COLLECTION} was removed"
        )
        log.error(f"lost the write lease of '{self.endpoint}': {self._lost}")

    def check(self) -> None:
        """Raise LeaseLost unless the lease is surely still this run's; between batches."""
        why = self._lost
        age = time.monotonic() - self._confirmed
        if why is None and age > self.seconds * STALE_AFTER:
            why = (
                f"not renewed for {age:.0f} s ({self._last_error or 'no answer'}), so another "
                f"run may take it over {self.seconds:.0f} s after the last renewal"
            )
        if why is not None:
            raise LeaseLost(
                f"lost the write lease of '{self.endpoint}': {why}. Stopped before the next "
                "batch: what was written is consistent (whole documents), and running it "
                "again converges"
            )

    # -- giving it back -----------------------------------------------------------------

    def release(self) -> None:
        """Delete the lease document if it is still this run's; never raises."""
        self._stop.set()
        _held.discard(self)
        if self._renewer is not None and self._renewer is not threading.current_thread():
            self._renewer.join(timeout=RELEASE_SECONDS)
        if not self._tried:
            return
        try:
            with pymongo.timeout(RELEASE_SECONDS):
                self.coll.delete_one({"_id": LEASE_ID, "token": self.token})
        except PyMongoError as exc:
            log.warning(
                f"could not release the write lease of '{self.endpoint}' ({server_reason(exc)}); "
                f"it expires by itself within {self.seconds:.0f} s",
                extra={"endpoint": self.endpoint},
            )


class _Held:
    """Leases held by this process, so a daemon exiting at once can still give them back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._leases: set[DatabaseLease] = set()

    def add(self, lease: DatabaseLease) -> None:
        with self._lock:
            self._leases.add(lease)

    def discard(self, lease: DatabaseLease) -> None:
        with self._lock:
            self._leases.discard(lease)

    def release_all(self) -> None:
        with self._lock:
            leases = list(self._leases)
        for lease in leases:
            lease.release()


_held = _Held()
release_all = _held.release_all
