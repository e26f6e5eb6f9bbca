"""`syncd verify`: compare both sides of a flow now, document by document, and their indexes
and options. Writes nothing to either endpoint.

One streaming read of each side per collection: `CollectionScratch.read` digests every
document into an SQLite file in a temporary directory (memory does not grow with the
collection), and `CollectionScratch.compare` finds what is missing on the target, extra on
the target, or different. Digests are of the raw BSON, so field order and numeric types
count, as they do for a sync.

Both sides are read through the collections' policies as a sync reads them
(engine/policy.py): the `filter` on both sides, the source's documents masked by `mask`.
What a sync deliberately leaves different besides plugs in as `Views`: per collection, a
function for each side that returns the document as the comparison should see it, or None
to leave it out. `flow_views` gives the flow's: the password its `reset_passwords` hooks
set on the target is not compared for the users they reset.

The last result per flow is kept in the state directory (`verify/FLOW.json`) for
`syncd status` and the daemon's metrics.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import bson
from bson.raw_bson import RawBSONDocument

from syncd.config.model import Config, Flow, ResetPasswordsHook
from syncd.endpoints import opened, refuse_same_database
from syncd.engine.context import Check, RunContext, go_on
from syncd.engine.flow import get_flow, select_collections, skip_unsyncable
from syncd.engine.policy import SRC, TGT, Policies
from syncd.engine.progress import Reporter, Silent
from syncd.engine.scratch import CollectionScratch
from syncd.mongo.rawbson import id_value
from syncd.mongo.retry import failing_clearly, with_retries
from syncd.mongo.source import CollectionSpec, DocumentSource, MongoSource
from syncd.mongo.specs import SpecChanges, compare_specs
from syncd.state.statedir import StateDir

log = logging.getLogger("syncd.verify")

SAMPLE_IDS = 10
View = Callable[[bytes], bytes | None]  # a document as compared, or None: not compared
Views = Callable[[str], tuple[View | None, View | None]]  # collection -> (source, target)


def no_views(collection: str) -> tuple[View | None, View | None]:
    """Both sides compared as they are."""
    return None, None


def flow_views(config: Config, flow: Flow) -> Views:
    """What a sync of `flow` deliberately leaves different, left out of the comparison.

    The password a `reset_passwords` hook of the flow sets on the target, for the users it
    resets (their password field is not compared on either side). Filters and masks are
    applied by the policies both sides are read through (`verify_flow`)."""
    hooks = [config.hooks[name] for name in flow.after if name in config.hooks]

    def views(collection: str) -> tuple[View | None, View | None]:
        mine = [h for h in hooks if h.collection == collection]
        if not mine:
            return None, None
        view = partial(_without_reset_passwords, mine)
        return view, view

    return views


def _without_reset_passwords(hooks: list[ResetPasswordsHook], raw: bytes) -> bytes:
    doc = RawBSONDocument(raw)
    drop = {
        h.password_field
        for h in hooks
        if doc.get(h.match_field) in h.users and h.password_field in doc
    }
    if not drop:
        return raw
    return bytes(bson.encode({k: v for k, v in doc.items() if k not in drop}))


@dataclass
class CollectionVerify:
    name: str
    source_count: int = 0
    target_count: int = 0
    missing: int = 0  # on the source, not on the target
    extra: int = 0  # on the target, not on the source
    different: int = 0  # on both, not byte for byte equal
    missing_ids: list[str] = field(default_factory=list)
    extra_ids: list[str] = field(default_factory=list)
    different_ids: list[str] = field(default_factory=list)
    specs: list[str] = field(default_factory=list)  # index and option differences

    @property
    def mismatched(self) -> int:
        return self.missing + self.extra + self.different

    @property
    def equal(self) -> bool:
        return not self.mismatched and not self.specs


@dataclass
class VerifyReport:
    flow: str
    source: str
    target: str
    finished: float = 0.0  # unix time
    seconds: float = 0.0
    collections: list[CollectionVerify] = field(default_factory=list)

    @property
    def equal(self) -> bool:
        return all(c.equal for c in self.collections)

    @property
    def result(self) -> Literal["equal", "different"]:
        return "equal" if self.equal else "different"

    def as_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "source": self.source,
            "target": self.target,
            "result": self.result,
            "finished": self.finished,
            "seconds": round(self.seconds, 3),
            "collections": [{**asdict(c), "equal": c.equal} for c in self.collections],
        }


def verify_flow(
    config: Config,
    flow_name: str,
    collections: Sequence[str] | None = None,
    *,
    views: Views | None = None,
    reporter: Reporter | None = None,
    stop: Check = go_on,
) -> VerifyReport:
    """Compare the flow's collections on both sides; record the result in the state dir.

    `views` default to `flow_views`: the documents as the flow's sync leaves them; `stop`
    is checked as each side's read reports progress (a daemon stopping)."""
    flow = get_flow(config, flow_name)
    views = views or flow_views(config, flow)
    run = RunContext(reporter or Silent(), stop=stop)
    started = time.monotonic()
    report = VerifyReport(flow.name, flow.source, flow.target)
    endpoints = config.endpoints[flow.source], config.endpoints[flow.target]
    with (
        opened(*endpoints) as (source, target),
        tempfile.TemporaryDirectory(prefix="syncd-verify-") as scratch,
    ):
        refuse_same_database(source, target)
        policies = Policies(config)  # filtered as a sync reads them; the source masked
        source_db = MongoSource(source.db, source.label, views=policies.reads(SRC))
        target_db = MongoSource(target.db, target.label, views=policies.reads(TGT))
        available = set(source_db.list_collections()) | set(target_db.list_collections())
        names = skip_unsyncable(
            select_collections(config, flow, collections, available),
            source_db,
            target_db,
            requested=collections,
        )
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify") as pool:
            for index, name in enumerate(names):
                work = Path(scratch) / str(index)
                work.mkdir()
                checked = _verify_collection(
                    pool, source_db, target_db, name, work, views(name), run, flow.target
                )
                report.collections.append(checked)
                log.info(
                    "verified" if checked.equal else "differs",
                    extra={"collection": name, "missing": checked.missing,
                           "extra": checked.extra, "different": checked.different,
                           "specs": len(checked.specs)},
                )  # fmt: skip
    run.reporter.clear()
    report.seconds = time.monotonic() - started
    report.finished = time.time()
    record_verify(config.state, report)
    return report


def _verify_collection(
    pool: ThreadPoolExecutor,
    source: MongoSource,
    target: MongoSource,
    name: str,
    work: Path,
    views: tuple[View | None, View | None],
    run: RunContext,
    target_name: str,
) -> CollectionVerify:
    result = CollectionVerify(name)
    source_spec, target_spec = _spec(source, name), _spec(target, name)
    changes = compare_specs(source_spec, target_spec, target.server_version())
    result.specs = describe_spec_differences(changes, target_name)
    scratch = CollectionScratch(work, name)
    sides = [
        pool.submit(
            with_retries,
            partial(
                scratch.read,
                which,
                _Viewed(side, view),
                progress=run.progress(name, f"verify {role}"),
            ),
            what=f"verify {name} ({side.label})",
        )
        for side, view, role, which in (
            (source, views[0], "source", SRC),
            (target, views[1], "target", TGT),
        )
    ]
    with failing_clearly("reading", name, source.label):
        result.source_count = sides[0].result().count
    with failing_clearly("reading", name, target.label):
        result.target_count = sides[1].result().count
    for kind, (count, rids) in scratch.compare(SAMPLE_IDS).items():
        setattr(result, kind, count)
        setattr(result, f"{kind}_ids", [str(id_value(rid)) for rid in rids])
    return result


def _spec(side: DocumentSource, name: str) -> CollectionSpec | None:
    with failing_clearly("reading", name, side.label):
        return with_retries(partial(side.collection_spec, name), what=f"verify {name}")


class _Viewed:
    """A side's documents as the comparison sees them (`View`), or as they are."""

    def __init__(self, side: MongoSource, view: View | None) -> None:
        self.side, self.view, self.label = side, view, side.label

    def iter_raw(self, name: str) -> Iterator[bytes]:
        for raw in self.side.iter_raw(name):
            seen = raw if self.view is None else self.view(raw)
            if seen is not None:
                yield seen

    def list_collections(self) -> list[str]:
        return self.side.list_collections()

    def collection_spec(self, name: str) -> CollectionSpec | None:
        return self.side.collection_spec(name)

    def count(self, name: str) -> int:
        return self.side.count(name)


def describe_spec_differences(changes: SpecChanges, target: str) -> list[str]:
    """What differs besides the documents, as a person reads it (not as a sync fixes it)."""
    if changes.create is not None:
        return [f"the collection is missing on {target}"]
    lines = [f"option {key} differs" for key in sorted(changes.collmod)]
    lines += [f"option {key} differs (cannot be changed in place)" for key in changes.immutable]
    created = {str(spec["name"]) for spec in changes.create_indexes}
    for name in changes.drop_indexes:
        lines.append(
            f"index {name} differs" if name in created else f"index {name} only on {target}"
        )
    lines += [
        f"index {name} missing on {target}" for name in sorted(created - set(changes.drop_indexes))
    ]
    return lines


# -- the last result, per flow, in the state directory ---------------------------------


def record_verify(state: StateDir, report: VerifyReport) -> None:
    """Keep the result (atomically: a reader sees the old or the new one). A state
    directory that cannot be written costs the record, not the comparison."""
    path = state.verify_record(report.flow)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("verify result not recorded in %s: %s", path.parent, exc.strerror or exc)


def last_verify(state: StateDir, flow: str) -> dict[str, Any] | None:
    """The last recorded result of `verify FLOW` (as `VerifyReport.as_dict`), or None."""
    try:
        data = json.loads(state.verify_record(flow).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("flow") == flow else None
