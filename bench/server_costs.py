"""What the server itself costs: the floors under `bench_sync.py`'s figures.

Plain pymongo against the benchmark's servers (two SecantusDB processes, or
`SYNCD_BENCH_URI_SOURCE` / `_TARGET`), no syncd code: the latency of a collection scan's
first batch, a whole scan, the `count` command, inserting the documents, and building the
unique index after the inserts and before them; then the floor of a full sync: the raw
copy as `bench_sync.py` times it, the same copy with a reader thread feeding the inserts
(the source's read overlapped with the target's writes), the unique index built after it,
and the two ways to verify a copy afterwards (reading the target's change stream over the
copy's inserts, or scanning the target); and the writes of a 1%-changed sync with and
without `j: true`. `bench/README.md` explains which syncd figure each one bounds.

    .venv/bin/python bench/server_costs.py [--n 100000]
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo import MongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sync import COLL, DB, bench_servers, load  # noqa: E402


def timed(step: Callable[[], Any]) -> float:
    started = time.monotonic()
    step()
    return time.monotonic() - started


def first_batch(client: MongoClient[Any]) -> None:
    cursor = client[DB][COLL].find_raw_batches(batch_size=2000)
    next(iter(cursor))
    cursor.close()


def read_all(client: MongoClient[Any]) -> list[bytes]:
    docs = []
    for batch in client[DB][COLL].find_raw_batches(batch_size=2000):
        offset = 0
        while offset < len(batch):
            size = int.from_bytes(batch[offset : offset + 4], "little")
            docs.append(batch[offset : offset + size])
            offset += size
    return docs


def insert_all(client: MongoClient[Any], name: str, docs: list[bytes]) -> None:
    coll = client[DB][name]
    for start in range(0, len(docs), 1000):
        coll.insert_many([RawBSONDocument(d) for d in docs[start : start + 1000]], ordered=False)


def split(batch: bytes) -> list[RawBSONDocument]:
    docs, offset = [], 0
    while offset < len(batch):
        size = int.from_bytes(batch[offset : offset + 4], "little")
        docs.append(RawBSONDocument(batch[offset : offset + size]))
        offset += size
    return docs


def sequential_copy(client: MongoClient[Any], target: MongoClient[Any], name: str) -> None:
    """`bench_sync.raw_copy` for one collection: read a batch, insert it, read the next."""
    for batch in client[DB][COLL].find_raw_batches(batch_size=2000):
        target[DB][name].insert_many(split(batch), ordered=False)


def pipelined_copy(client: MongoClient[Any], target: MongoClient[Any], name: str) -> None:
    """A reader thread fetches the next batches while the main thread inserts."""
    batches: queue.Queue[bytes | None] = queue.Queue(maxsize=3)

    def read() -> None:
        for batch in client[DB][COLL].find_raw_batches(batch_size=2000):
            batches.put(batch)
        batches.put(None)

    reader = threading.Thread(target=read)
    reader.start()
    while (batch := batches.get()) is not None:
        target[DB][name].insert_many(split(batch), ordered=False)
    reader.join()


def stream_over(target: MongoClient[Any], token: Any, name: str) -> int:
    """Read the target's change stream from `token` to its end, inserts left out by the
    server: how a sync would tell someone else's writes from the copy's own."""
    raw = target[DB].with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
    pipeline = [
        {"$match": {"ns.coll": {"$in": [name]}}},
        {"$match": {"operationType": {"$ne": "insert"}}},
    ]
    events = 0
    with raw.watch(pipeline, resume_after=token, max_await_time_ms=20, batch_size=5000) as s:
        last = s.resume_token
        while True:
            if s.try_next() is not None:
                events += 1
                continue
            if s.resume_token == last:
                return events
            last = s.resume_token


def copy_floor(src: str, dst: str) -> list[tuple[str, float]]:
    """A full copy's floor and its two ways of being verified, with ratios to the raw copy
    measured here."""
    source, target = MongoClient(src), MongoClient(dst)
    for name in ("seq", "piped"):
        target[DB].drop_collection(name)
    raw = timed(lambda: sequential_copy(source, target, "seq"))
    with target[DB].watch(max_await_time_ms=20) as stream:
        stream.try_next()
        token = stream.resume_token
    piped = timed(lambda: pipelined_copy(source, target, "piped"))
    index = timed(lambda: target[DB]["piped"].create_index("number", unique=True))
    stream = timed(lambda: stream_over(target, token, "piped"))
    scan = timed(lambda: sum(1 for _ in target[DB]["piped"].find_raw_batches(batch_size=2000)))
    for name in ("seq", "piped"):
        target[DB].drop_collection(name)
    return [
        ("raw copy (sequential, as bench_sync times it)", raw),
        ("copy with a reader thread (read || insert)", piped),
        ("unique index built after it", index),
        ("  copy with a reader thread + index", piped + index),
        ("verify: target stream over the copy's inserts", stream),
        ("verify: scan of the target", scan),
        ("  copy with a reader thread + index + scan", piped + index + scan),
    ]


def journaled_writes(src: str, dst: str, n: int = 1000) -> list[tuple[str, float]]:
    """`n` replaces (changed documents) and `n` deletes in one unordered bulk write each,
    acknowledged once journaled (`j: true`, syncd's default) or not: what the writes of a
    1%-changed sync cost the target, and how much of it is the journal."""
    from pymongo import DeleteOne, ReplaceOne
    from pymongo.write_concern import WriteConcern

    source, target = MongoClient(src), MongoClient(dst)
    docs = list(source[DB][COLL].find().limit(4 * n))
    coll = target[DB]["journaled"]
    coll.drop()
    coll.insert_many(docs, ordered=False)
    coll.create_index("number", unique=True)
    rows = []
    for k, journal in enumerate((True, False)):
        wc = coll.with_options(write_concern=WriteConcern(w=1, j=journal))
        part = docs[2 * k * n : (2 * k + 1) * n]
        replaces = [ReplaceOne({"_id": d["_id"]}, {**d, "version": 2}, upsert=True) for d in part]
        gone = [DeleteOne({"_id": d["_id"]}) for d in docs[(2 * k + 1) * n : (2 * k + 2) * n]]
        said = str(journal).lower()
        rows.append((f"{n} replaces, j: {said}", timed(partial(wc.bulk_write, replaces, False))))
        rows.append((f"{n} deletes, j: {said}", timed(partial(wc.bulk_write, gone, False))))
    coll.drop()
    return rows


def measure(src: str, dst: str) -> list[tuple[str, float]]:
    source, target = MongoClient(src), MongoClient(dst)
    docs: list[bytes] = []
    rows = [
        ("scan: first batch of 2000 (find)", timed(lambda: first_batch(source))),
        ("scan: every document (find, raw batches)", timed(lambda: docs.extend(read_all(source)))),
        ("count command (no filter)", timed(lambda: source[DB].command("count", COLL))),
    ]
    target[DB].drop_collection("after")
    rows.append(("insert, no secondary index", timed(lambda: insert_all(target, "after", docs))))
    build = timed(lambda: target[DB]["after"].create_index("number", unique=True))
    rows.append(("unique index built after the inserts", build))
    target[DB].drop_collection("before")
    target[DB]["before"].create_index("number", unique=True)
    indexed = timed(lambda: insert_all(target, "before", docs))
    rows.append(("insert into a collection with the index", indexed))
    for name in ("after", "before"):
        target[DB].drop_collection(name)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100_000, help="documents (default 100000)")
    args = parser.parse_args()
    with bench_servers("syncd-costs-") as (src, dst, _):
        load(src, DB, args.n)
        print(f"N = {args.n} documents (~1 KB, nested), plain pymongo")
        for label, seconds in measure(src, dst):
            print(f"{label:48} {seconds:8.2f} s")
        print("\nthe writes of a 1%-changed sync (1,000 replaces, 100 deletes per 100k)")
        for label, seconds in journaled_writes(src, dst):
            print(f"{label:48} {seconds:8.2f} s")
        floor = copy_floor(src, dst)
        raw = floor[0][1]
        print("\nthe floor of a full sync (one collection), x the raw copy of this run")
        for label, seconds in floor:
            print(f"{label:48} {seconds:8.2f} s {seconds / raw:6.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
