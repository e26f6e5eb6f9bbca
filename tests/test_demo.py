"""`syncd demo` end to end: two embedded endpoints, every step, real output, exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SYNCD = Path(sys.executable).with_name("syncd")
PASSWORD = "Demo-Reset-Pw-7b1e"  # the demo reads it from its environment when set

# Each step's heading and a line only the real command (or the demo's own check) prints.
STEPS = [
    ("1. Load a small VALKYRIA ECM data set", "fs.chunks"),
    ("2. Validate the policy", "OK (2 endpoints, 2 flows"),
    ("3. Status before the first sync", "from_production: production -> local"),
    ("4. Workflow B", "collections verified equal to the source"),
    ("5. Two people change things", "the admin changed the last name"),
    ("6. Push without pulling first: refused for drift", "(exit code 3)"),
    ("7. Push with --drift merge", "login works: admin@valkyria.com"),
    ("8. Back up local by hand", "verified"),
    ("9. A local mistake, undone from the backup", "legal_contracts in local: 12 documents"),
    ("10. The daemon", "syncd_build_info{"),
]


@pytest.mark.slow
def test_demo_walks_every_step_cleans_up_and_never_prints_the_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE", "SYNCD_CONFIG")}
    env["TMPDIR"] = str(tmp_path)  # the demo's temp dir lands here, so we can see it is gone
    env["SYNCD_DEMO_RESET_PASSWORD"] = PASSWORD
    result = subprocess.run(
        [str(SYNCD), "demo"],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    position = 0
    for heading, key_line in STEPS:
        start = output.find(f"=== {heading}", position)
        assert start >= 0, f"missing step {heading!r}:\n{output}"
        end = output.find("\n=== ", start + 1)
        section = output[start : end if end >= 0 else len(output)]
        assert key_line in section, f"step {heading!r} lacks {key_line!r}:\n{section}"
        position = start
    assert "hook 'reset_passwords': reset the password of 3 of 3 users" in output
    assert 'syncd_endpoint_up{endpoint="production"} 1.0' in output
    assert "daemon exited with code 0" in output
    assert PASSWORD not in output
    assert not any(p.name.startswith("syncd-demo-") for p in tmp_path.iterdir())
