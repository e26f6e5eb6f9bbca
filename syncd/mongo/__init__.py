"""The MongoDB-facing bottom layer: everything that talks to a server and nothing that
decides what to sync. The engine, backups, the lease and the hooks import it; it imports
none of them (tests/test_layers.py).

Errors and retries: `retry` (`with_retries`, transient errors), `privileges` (what an
unauthorized error needs); server facts: `server`, `sharding`, `timeouts`; raw BSON:
`rawbson`, `rawcursor` (`find`/`getMore` with undecoded replies), `fetch` (reads by
`_id`); a database as the engine reads it: `source` (`MongoSource`, `CollectionSpec`),
`view` (a collection's query and transform), `specs` (collection options),
`changestream` (change streams to a fence).
"""
