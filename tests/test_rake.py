"""contrib/rails/lib/tasks/db_sync.rake: the seed's `rake db:sync:*` tasks, run by the real
`rake` (Debian's `ruby` and `rake`, installed by `make tools`), each running the real
`syncd` against two SecantusDB servers.

The app is a directory holding config/syncd.yml, as a Rails app does; rake runs there with
`-f` pointing at the shipped file (no Rails), or, in one test, from a Rakefile that loads
lib/tasks/*.rake as Rails does.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pymongo.database import Database

from tests.engine_kit import config_text
from tests.safety_cli import SYNCD, TIMEOUT, Ran, backup_names, command_on_terminal, snapshot

DB = Database[dict[str, Any]]
REPO = Path(__file__).resolve().parent.parent
RAKEFILE = REPO / "contrib" / "rails" / "lib" / "tasks" / "db_sync.rake"
RAKE = shutil.which("rake")
RUBY = shutil.which("ruby")
PROMPT = "Write these changes to protected endpoint 'production'? [y/N]"
# Variables of the caller that would change what rake or syncd does.
SCRUBBED = ("FORCE", "SYNCD_CONFIG", "SYNCD_BIN", "RAKEOPT", "JOURNAL_STREAM")

pytestmark = pytest.mark.skipif(
    RAKE is None or RUBY is None,
    reason="rake not on PATH (Debian packages `ruby` and `rake`; `make tools` installs them)",
)


@dataclass(frozen=True)
class App:
    """A Rails app's root as far as the rake file cares: config/syncd.yml and a state dir."""

    root: Path
    local: DB
    production: DB

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    def rake(self, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Ran:
        """`rake -f db_sync.rake ARGS...` in the app's root, no terminal, syncd on PATH."""
        return rake(["-f", str(RAKEFILE), *args], cwd=cwd or self.root, env=rake_env(env))


def rake_env(extra: dict[str, str] | None = None, *, with_syncd: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    dirs = [d for d in env.get("PATH", "").split(os.pathsep) if d]
    if with_syncd:
        dirs.insert(0, str(SYNCD.parent))
    else:  # every directory with a `syncd` left out; ruby and rake stay
        dirs = [d for d in dirs if not os.access(Path(d) / "syncd", os.X_OK)]
    env["PATH"] = os.pathsep.join(dirs)
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **(extra or {})}


def rake(argv: list[str], *, cwd: Path, env: dict[str, str]) -> Ran:
    assert RAKE is not None
    proc = subprocess.run(
        [RAKE, *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    return Ran(tuple(argv), proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def app(
    tmp_path: Path, local_db: DB, production_db: DB, local_uri: str, production_uri: str
) -> App:
    """The seed's setup (production protected, drift: abort) in APP/config/syncd.yml."""
    root = tmp_path / "app"
    (root / "config").mkdir(parents=True)
    text = config_text(root / "state", local_uri, production_uri, hook=False)
    (root / "config" / "syncd.yml").write_text(text, encoding="utf-8")
    return App(root, local_db, production_db)


def seed_local(app: App) -> None:
    """Local work not yet pushed: two users and a template; production is empty."""
    app.local.users.insert_many([{"_id": 1, "email": "a@x.org"}, {"_id": 2, "email": "b@x.org"}])
    app.local.templates.insert_one({"_id": "contract", "body": "v1"})


def backup_name(output: str, endpoint: str) -> str:
    match = re.search(rf"^({endpoint}_\d{{8}}_\d{{6}}\w*): ", output, re.MULTILINE)
    assert match, output
    return match.group(1)


def test_the_rake_file_loads_without_warnings() -> None:
    assert RUBY is not None
    checked = subprocess.run(
        [RUBY, "-wc", str(RAKEFILE)], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    assert (checked.returncode, checked.stdout, checked.stderr) == (0, "Syntax OK\n", "")


def test_rake_lists_every_task_of_the_protocol(tmp_path: Path) -> None:
    ran = rake(["-f", str(RAKEFILE), "-T"], cwd=tmp_path, env=rake_env())

    assert ran.code == 0, ran
    tasks = re.findall(r"^rake (\S+)", ran.stdout, re.MULTILINE)
    assert sorted(tasks) == [
        "db:sync:backup:list",
        "db:sync:backup:local",
        "db:sync:backup:production",
        "db:sync:backup:restore_local[name]",
        "db:sync:collection_from_production[collection]",
        "db:sync:collection_to_production[collection]",
        "db:sync:from_production",
        "db:sync:status",
        "db:sync:to_production",
    ]


def test_status_runs_syncd_status_with_the_apps_config(app: App) -> None:
    seed_local(app)

    ran = app.rake("db:sync:status")

    assert ran.code == 0, ran
    assert ran.stderr.startswith("syncd -c config/syncd.yml status\n"), ran
    for word in ("local", "production", "users", "templates"):
        assert word in ran.stdout, ran


def test_push_without_force_is_refused_with_exit_3(app: App) -> None:
    seed_local(app)

    ran = app.rake("db:sync:to_production")

    assert ran.code == 3, ran
    assert "syncd -c config/syncd.yml sync to_production\n" in ran.stderr
    assert "'production' is protected" in ran.stderr
    assert "FORCE=true" in ran.stderr
    assert "rake aborted" not in ran.output and "Traceback" not in ran.output
    assert snapshot(app.production) == {}
    assert backup_names(app.state_dir) == []


@pytest.mark.parametrize("how", ["environment", "rake argument"])
def test_force_true_answers_the_protected_endpoint_question(app: App, how: str) -> None:
    seed_local(app)

    if how == "environment":
        ran = app.rake("db:sync:to_production", env={"FORCE": "true"})
    else:  # rake takes NAME=value arguments into its environment
        ran = app.rake("db:sync:to_production", "FORCE=true")

    assert ran.code == 0, ran
    assert "syncd -c config/syncd.yml sync to_production --yes\n" in ran.stderr
    assert snapshot(app.production) == snapshot(app.local)


def test_a_yes_on_the_terminal_answers_the_question_through_rake(app: App) -> None:
    seed_local(app)
    assert RAKE is not None

    ran = command_on_terminal(
        [RAKE, "-f", str(RAKEFILE), "db:sync:to_production"],
        answer="y",
        wait_for=PROMPT,
        env=rake_env(),
        cwd=app.root,
    )

    assert PROMPT in ran.stdout, ran
    assert ran.code == 0, ran
    assert snapshot(app.production) == snapshot(app.local)


def test_ctrl_c_at_the_question_ends_with_syncds_exit_code(app: App) -> None:
    """Ctrl-C reaches rake and syncd (one process group): rake waits for syncd to stop and
    ends with its code, instead of "rake aborted! Interrupt" while syncd still runs."""
    seed_local(app)
    assert RAKE is not None

    ran = command_on_terminal(
        [RAKE, "-f", str(RAKEFILE), "db:sync:to_production"],
        answer=signal.SIGINT,
        wait_for=PROMPT,
        env=rake_env(),
        cwd=app.root,
    )

    assert PROMPT in ran.stdout, ran
    assert ran.code == 1, ran
    assert "syncd: interrupted" in ran.stdout
    assert "rake aborted" not in ran.stdout and "Interrupt" not in ran.stdout
    assert snapshot(app.production) == {}


def test_drift_refusal_stays_exit_3_even_with_force(app: App) -> None:
    seed_local(app)
    assert app.rake("db:sync:to_production", "FORCE=true").code == 0
    app.production.users.update_one({"_id": 1}, {"$set": {"email": "edited@x.org"}})  # the UI
    app.local.users.update_one({"_id": 1}, {"$set": {"name": "A"}})
    before = snapshot(app.production)

    ran = app.rake("db:sync:to_production", "FORCE=true")

    assert ran.code == 3, ran
    assert "drift" in ran.stderr and "users" in ran.stderr, ran
    assert "rake aborted" not in ran.output
    assert snapshot(app.production) == before


def test_pull_brings_production_to_local(app: App) -> None:
    app.production.users.insert_one({"_id": 7, "email": "prod@x.org"})

    ran = app.rake("db:sync:from_production")

    assert ran.code == 0, ran
    assert "syncd -c config/syncd.yml sync from_production\n" in ran.stderr
    assert snapshot(app.local) == snapshot(app.production)


@pytest.mark.parametrize(
    ("task", "flow"),
    [("collection_to_production", "to_production"), ("collection_from_production", "")],
)
def test_a_bracketed_collection_name_syncs_that_collection_only(
    app: App, task: str, flow: str
) -> None:
    source, target = (app.local, app.production) if flow else (app.production, app.local)
    source.templates.insert_one({"_id": "contract", "body": "v2"})
    source.users.insert_one({"_id": 1, "email": "a@x.org"})

    ran = app.rake(f"db:sync:{task}[templates]", "FORCE=true")

    assert ran.code == 0, ran
    assert " -C templates --yes\n" in ran.stderr, ran
    assert snapshot(target) == {"templates": snapshot(source)["templates"]}


def test_several_bracketed_collections_are_each_passed(app: App) -> None:
    for name in ("users", "roles", "templates"):
        app.production[name].insert_one({"_id": 1, "name": name})

    ran = app.rake("db:sync:collection_from_production[users,roles]")

    assert ran.code == 0, ran
    assert "sync from_production -C users -C roles\n" in ran.stderr, ran
    assert sorted(snapshot(app.local)) == ["roles", "users"]


def test_a_collection_task_without_a_name_is_a_usage_error(app: App) -> None:
    ran = app.rake("db:sync:collection_to_production")

    assert ran.code == 2, ran
    assert 'rake "db:sync:collection_to_production[COLLECTION]"' in ran.stderr
    assert "rake aborted" not in ran.output


def test_backup_tasks_create_list_and_restore(app: App) -> None:
    seed_local(app)
    app.production.users.insert_one({"_id": 9, "email": "prod@x.org"})
    before = snapshot(app.local)

    local = app.rake("db:sync:backup:local")
    production = app.rake("db:sync:backup:production")
    assert (local.code, production.code) == (0, 0), (local, production)
    name = backup_name(local.stdout, "local")
    assert "syncd -c config/syncd.yml backup create local\n" in local.stderr
    assert backup_name(production.stdout, "production") in backup_names(app.state_dir)

    listed = app.rake("db:sync:backup:list")
    assert listed.code == 0, listed
    assert name in listed.stdout and "production_" in listed.stdout

    app.local.users.delete_many({})
    app.local.templates.update_one({"_id": "contract"}, {"$set": {"body": "broken"}})
    restored = app.rake(f"db:sync:backup:restore_local[{name}]")

    assert restored.code == 0, restored
    assert f"syncd -c config/syncd.yml backup restore {name} --to local\n" in restored.stderr
    assert snapshot(app.local) == before


def test_a_production_backup_restores_into_local(app: App) -> None:
    app.production.users.insert_one({"_id": 9, "email": "prod@x.org"})
    created = app.rake("db:sync:backup:production")
    assert created.code == 0, created

    ran = app.rake(f"db:sync:backup:restore_local[{backup_name(created.stdout, 'production')}]")

    assert ran.code == 0, ran
    assert snapshot(app.local) == snapshot(app.production)


def test_a_failing_task_stops_the_tasks_after_it(app: App) -> None:
    seed_local(app)

    ran = app.rake("db:sync:to_production", "db:sync:backup:local")

    assert ran.code == 3, ran
    assert "backup create" not in ran.stderr
    assert backup_names(app.state_dir) == []


def test_syncd_config_names_another_policy_file(app: App) -> None:
    (app.root / "config" / "syncd.yml").rename(app.root / "policy.yaml")

    missing = app.rake("db:sync:status")
    chosen = app.rake("db:sync:status", env={"SYNCD_CONFIG": "policy.yaml"})

    assert missing.code == 2, missing
    assert "config/syncd.yml:1:1: (top): config file not found" in missing.stderr
    assert chosen.code == 0, chosen
    assert chosen.stderr.startswith("syncd -c policy.yaml status\n"), chosen


def test_a_rails_style_app_finds_the_tasks_and_its_config(app: App) -> None:
    """Copied to lib/tasks/ and loaded by the app's Rakefile; rake run from a subdirectory
    moves to the app's root, where config/syncd.yml is."""
    tasks = app.root / "lib" / "tasks"
    tasks.mkdir(parents=True)
    shutil.copy(RAKEFILE, tasks / "db_sync.rake")
    (app.root / "Rakefile").write_text(
        'Dir.glob(File.join(__dir__, "lib", "tasks", "*.rake")).sort.each { |f| load f }\n',
        encoding="utf-8",
    )
    (app.root / "app" / "models").mkdir(parents=True)

    ran = rake(["db:sync:status"], cwd=app.root / "app" / "models", env=rake_env())

    assert ran.code == 0, ran
    assert "syncd -c config/syncd.yml status\n" in ran.stderr, ran


@pytest.mark.parametrize("task", ["db:sync:status", "db:sync:to_production"])
def test_without_syncd_the_task_says_how_to_install_it(app: App, task: str) -> None:
    env = rake_env(with_syncd=False)

    ran = rake(["-f", str(RAKEFILE), task], cwd=app.root, env=env)

    assert ran.code == 127, ran
    assert f"{task}: syncd is not installed: no `syncd` on PATH" in ran.stderr
    assert "SYNCD_BIN" in ran.stderr
    assert "rake aborted" not in ran.output and ran.stdout == ""


def test_syncd_bin_names_the_executable(app: App) -> None:
    ran = rake(
        ["-f", str(RAKEFILE), "db:sync:status"],
        cwd=app.root,
        env=rake_env({"SYNCD_BIN": str(SYNCD)}, with_syncd=False),
    )

    assert ran.code == 0, ran
    assert ran.stderr.startswith(f"{SYNCD} -c config/syncd.yml status\n"), ran
