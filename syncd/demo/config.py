"""The demo's syncd.yaml: the seed's policy, pointed at the two embedded endpoints."""

from __future__ import annotations

from pathlib import Path

PRODUCTION_URI_ENV = "SYNCD_DEMO_PRODUCTION_URI"
RESET_PASSWORD_ENV = "SYNCD_DEMO_RESET_PASSWORD"  # noqa: S105 - a variable name
LOCAL_DB = "valkyria_ecm_development"
PRODUCTION_DB = "valkyria_ecm_production"

_TEMPLATE = """\
# syncd demo policy: the team's sync protocol, with two embedded endpoints standing in
# for the developer's MongoDB and production.
version: 1
state_dir: {state_dir}
endpoints:
  local:
    uri: mongodb://127.0.0.1:{local_port}/{local_db}?directConnection=true
  production:
    uri_env: {uri_env}        # as Heroku's MONGODB_URI: never written in the file
    database: {production_db}
    protected: true
flows:
  to_production: {{source: local, target: production, after: [reset_passwords]}}
  from_production: {{source: production, target: local}}
collections:
  - name: users
  - name: audit_events
    flows: [from_production]          # production's history is only ever pulled
  - name: fs.files                    # GridFS: files and chunks travel together
  - name: fs.chunks
  - name: "*"                         # everything else, both ways
drift: abort
backups:
  keep_last: 5
  compress: gzip
  before_sync: full
hooks:
  reset_passwords:
    collection: users
    match_field: email
    password_field: encrypted_password
    scheme: bcrypt
    cost: 12
    password_env: {password_env}
    users: [hectorneira2005@hotmail.com, legal@valkyria.com, admin@valkyria.com]
schedules:
  - name: nightly-pull
    flow: from_production
    cron: "0 3 * * *"
  - name: deploy-push
    flow: to_production
    on_signal: true
    unattended: true
  - name: hourly-backup
    backup: production
    interval: 1h
metrics:
  listen: 127.0.0.1:{metrics_port}
"""


def write_config(path: Path, *, state_dir: Path, local_port: int, metrics_port: int) -> None:
    path.write_text(
        _TEMPLATE.format(
            state_dir=state_dir,
            local_port=local_port,
            local_db=LOCAL_DB,
            uri_env=PRODUCTION_URI_ENV,
            production_db=PRODUCTION_DB,
            password_env=RESET_PASSWORD_ENV,
            metrics_port=metrics_port,
        )
    )
