"""What the server itself costs: the floors under `bench_sync.py`'s figures.

Plain pymongo against the benchmark's servers (two SecantusDB processes, or
`SYNCD_BENCH_URI_SOURCE` / `_TARGET`), no syncd code: the latency of a collection scan's
first batch, a whole scan, the `count` command, inserting the documents, and building the
unique index after the inserts and before them. `bench/README.md` explains which syncd
figure each one bounds.

    .venv/bin/python bench/server_costs.py [--n 100000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
            print(f"{label:44} {seconds:8.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
