"""The sync engine. A newcomer's path through one sync and one restore:

A sync (`syncd sync FLOW`: actions/sync.py) calls `flow.sync_flow`: both endpoints are
opened, the same database refused, and the guarded sequence `pipeline.write_guarded` runs
with the sync's `Steps` (flow.py `_SyncSteps`) and a `context.RunContext` (the stop check,
the target's lease check, the reporter, the memory), in this order:
  1. lease: `lease.write_lease` on the target; its check goes into the run context.
  2. plan: `plan.plan_collections` asks `changes.choose` per collection how to find its
     changes (a `ChangeFinder`: `FullRead`, `FirstCopy`, `ByChanges` with a `SideFinder`
     per side); the finders fill each collection's scratch (scratch.py; change streams
     through syncd/mongo/changestream.py), `classify_plan` compares both sides and the
     memory (syncd/state/memory.py), and `describe` puts on the plan how it was found
     and how it is written (its `plan.Writing`: `write.FromScratch`, or
     `stream.CopyFirst` for a first copy).
  3. refuse (drift, conflicts, options: `PlanRefused`), or confirm a protected target
     (`pipeline.Guard`); a plan with nothing to write is remembered and done.
  4. backup: the flow's `before_sync` (prebackup.py); its failure writes nothing.
  5. intents, write, verify, remember (write.py): `record_intents`, `write_plan` (deletes,
     then each plan's `Writing.write`, through apply.py with the run's check before every
     batch), `verify_plan` (verify.py: read back what was written, or the collection, and
     the counts), `remember_plan` (both sides' digests and stream positions).
  6. the run is recorded in the memory, then the flow's hooks run (syncd/hooks.py).

A restore (`syncd backup restore NAME`: actions/backup.py) calls
`restore.restore_backup`: the target opened, an unconfirmable protected target refused,
then the same `write_guarded` with the restore's `Steps` (restore.py `_RestoreSteps`):
  - the backup is the source side (`backup.BackupSource`, read under its restore lock),
    the memory a throw-away one, and nothing is remembered;
  - a full backup is planned like a first sync (both sides read whole); a `changes`
    backup is planned by the finder `restore.Undo`: its before-images are the source's
    documents, the ids its sync inserted are deletes, the target read by `_id`;
  - the backup step is the restore's safety backup of the target; then the same write
    and verification as a sync's.

`--dry-run`, `status` and `diff` stop after step 2 (flow.py `_plan_only`).
"""
