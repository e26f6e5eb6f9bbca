"""An endpoint that is down: one line a person reads, in one server selection timeout.

Each way an endpoint fails that can be made on this machine, with syncd's own timeouts (10 s
server selection): a refused port, a port that accepts and never answers, a host name and an
SRV name that do not resolve, TLS to a server without it, a wrong password on SecantusDB with
--auth, and a URI from a `uri_command`. Every endpoint is reached once and all at once, so
`status` with seven endpoints down takes about 10 s, not seven times that (nor more, as when
each flow reached its endpoints again). The time bound is generous on purpose (15 s for a
10 s wait); it still fails if any endpoint is waited for twice.
"""

from __future__ import annotations

import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from syncd.config.secrets import redact
from tests.conftest import AuthServer
from tests.safety_cli import Ran, run_syncd
from tests.support.servers import Credentials, Server

TIMEOUT = 10  # syncd's server selection timeout (syncd.endpoints.SERVER_SELECTION_MS)
BOUND = 15.0  # seconds: one timeout, the start of Python and a loaded machine
UNRESOLVABLE = "no-such-host.invalid"  # RFC 6761: never resolves
AUTH_URI_ENV = "SYNCD_TEST_AUTH_URI"
DRIVER_DETAIL = ("Topology", "ServerDescription", "configured timeouts", "full error", "Errno")


@contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection is refused. Held for the
    test, so no other process can take it meanwhile."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])


@contextmanager
def silent_port() -> Iterator[int]:
    """A loopback port that accepts connections (the kernel does, into the backlog) and never
    says a word: a server that hangs, or a firewall that swallows the reply."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield int(sock.getsockname()[1])


def timed(config: Path, *args: str, env: dict[str, str] | None = None) -> tuple[Ran, float]:
    started = time.monotonic()
    ran = run_syncd(config, *args, env=env)
    return ran, time.monotonic() - started


def line_of(output: str, endpoint: str) -> str:
    """The one line of `output` about endpoint `endpoint`; fails if there are more or none."""
    lines = [text for text in output.splitlines() if f"endpoint '{endpoint}' (" in text]
    assert len(lines) == 1, f"{endpoint}: {lines}\n{output}"
    return lines[0].strip()


def pair_config(
    write_config: Callable[..., Path], tmp_path: Path, local_uri: str, production_uri: str
) -> Path:
    return write_config(
        f"""
        version: 1
        state_dir: {tmp_path / "state"}
        endpoints:
          local: {{uri: '{local_uri}'}}
          production: {{uri: '{production_uri}'}}
        flows:
          to_production: {{source: local, target: production}}
        collections:
          - name: users
        """
    )


@pytest.fixture
def wrong_password_uri(auth_server: AuthServer) -> str:
    admin = auth_server.users.admin
    wrong = Credentials(admin.username, "Wr0ng-" + secrets.token_urlsafe(12))
    return auth_server.server.uri_for("prod", credentials=wrong)


def test_status_says_once_why_each_endpoint_is_down_within_one_timeout(
    write_config: Callable[..., Path],
    tmp_path: Path,
    local_uri: str,
    server_production: Server,
    wrong_password_uri: str,
) -> None:
    tls_uri = (
        f"mongodb://{server_production.host}:{server_production.port}/prod"
        "?tls=true&directConnection=true"
    )
    with refusing_port() as refused, silent_port() as silent:
        config = write_config(
            f"""
            version: 1
            state_dir: {tmp_path / "state"}
            endpoints:
              local: {{uri: '{local_uri}'}}
              refused: {{uri: 'mongodb://127.0.0.1:{refused}/prod'}}
              silent: {{uri: 'mongodb://127.0.0.1:{silent}/prod'}}
              nowhere: {{uri: 'mongodb://{UNRESOLVABLE}:27017/prod'}}
              tls: {{uri: '{tls_uri}'}}
              auth: {{uri_env: {AUTH_URI_ENV}}}
              heroku: {{uri_command: 'echo mongodb://127.0.0.1:{refused}/prod'}}
              atlas: {{uri: 'mongodb+srv://cluster0.{UNRESOLVABLE}/prod'}}
            flows:
              to_refused: {{source: local, target: refused}}
              to_silent: {{source: local, target: silent}}
              to_nowhere: {{source: local, target: nowhere}}
              to_tls: {{source: local, target: tls}}
              to_auth: {{source: local, target: auth}}
              to_heroku: {{source: local, target: heroku}}
              to_atlas: {{source: local, target: atlas}}
              refused_to_nowhere: {{source: refused, target: nowhere}}
            collections:
              - name: users
            """
        )
        ran, seconds = timed(config, "status", env={AUTH_URI_ENV: wrong_password_uri})

    assert ran.code == 1, ran
    assert seconds < BOUND, f"status took {seconds:.1f} s\n{ran}"
    said = {name: line_of(ran.stdout, name) for name in ("refused", "silent", "nowhere", "tls")}
    said["auth"] = line_of(ran.stdout, "auth")
    said["heroku"] = line_of(ran.stdout, "heroku")
    said["atlas"] = line_of(ran.stdout, "atlas")
    assert said["refused"] == (
        f"endpoint 'refused' (mongodb://127.0.0.1:{refused}/prod) is unreachable: "
        f"connection refused (127.0.0.1:{refused}); "
        "start the server, or fix the host and port in the URI"
    )
    assert said["silent"] == (
        f"endpoint 'silent' (mongodb://127.0.0.1:{silent}/prod) is unreachable: "
        f"timed out after {TIMEOUT} s (127.0.0.1:{silent}); check the server is up and "
        "reachable from this machine (firewall, VPN, Atlas IP access list)"
    )
    assert said["nowhere"] == (
        f"endpoint 'nowhere' (mongodb://{UNRESOLVABLE}:27017/prod) is unreachable: "
        f"name not resolved ({UNRESOLVABLE}); check the host name in the URI"
    )
    # SecantusDB waits for the rest of a "message" that is a TLS hello (no TLS answer within
    # the connect timeout); a real mongod closes the connection: both are a failed handshake.
    assert re.fullmatch(
        rf"endpoint 'tls' \({re.escape(tls_uri)}\) is unreachable: TLS handshake failed: "
        rf"[^;]+ \({re.escape(server_production.host)}:{server_production.port}\); "
        r"check that the server has TLS on and the URI's tls and tlsCAFile options",
        said["tls"],
    ), said["tls"]
    assert said["auth"] == (
        f"endpoint 'auth' ({redact(wrong_password_uri)}) is unreachable: authentication failed; "
        f"check the user name and password in the URI (from environment variable {AUTH_URI_ENV})"
    )
    assert said["heroku"] == (
        f"endpoint 'heroku' (mongodb://127.0.0.1:{refused}/prod) is unreachable: "
        f"connection refused (127.0.0.1:{refused}); start the server, or fix the host and port "
        "in the URI (from the endpoint's uri_command: run it by hand; for Heroku, "
        "`heroku login` first)"
    )
    # An SRV name is looked up when the client is made (a resolver without network: timed out).
    assert said["atlas"].startswith(
        f"endpoint 'atlas' (mongodb+srv://cluster0.{UNRESOLVABLE}/prod) is unreachable: "
    )
    assert (
        said["atlas"].endswith(
            f"name not resolved (cluster0.{UNRESOLVABLE}); check the host name in the URI"
        )
        or f"the DNS lookup of cluster0.{UNRESOLVABLE} timed out" in said["atlas"]
    ), said["atlas"]
    # Each flow says which endpoint it needs, by name, without a second wait.
    for name in ("refused", "silent", "nowhere", "tls", "auth", "heroku", "atlas"):
        assert ran.stderr.count(f"cannot plan: endpoint '{name}' is unreachable (see above)") == 1
    assert "cannot plan: endpoints 'refused' and 'nowhere' are unreachable" in ran.stderr
    assert any(
        row.startswith("local ") and "up, MongoDB" in row for row in ran.stdout.splitlines()
    ), ran
    for detail in DRIVER_DETAIL:
        assert detail not in ran.output, detail
    assert wrong_password_uri not in ran.output


def test_sync_with_both_endpoints_down_names_both_within_one_timeout(
    write_config: Callable[..., Path], tmp_path: Path
) -> None:
    with refusing_port() as local, silent_port() as production:
        config = pair_config(
            write_config,
            tmp_path,
            f"mongodb://127.0.0.1:{local}/dev",
            f"mongodb://127.0.0.1:{production}/prod",
        )
        ran, seconds = timed(config, "sync", "to_production")

    assert ran.code == 1, ran
    assert seconds < BOUND, f"sync took {seconds:.1f} s\n{ran}"
    assert ran.stderr.splitlines() == [
        f"syncd: endpoint 'local' (mongodb://127.0.0.1:{local}/dev) is unreachable: "
        f"connection refused (127.0.0.1:{local}); "
        "start the server, or fix the host and port in the URI",
        f"syncd: endpoint 'production' (mongodb://127.0.0.1:{production}/prod) is unreachable: "
        f"timed out after {TIMEOUT} s (127.0.0.1:{production}); check the server is up and "
        "reachable from this machine (firewall, VPN, Atlas IP access list)",
    ], ran


def test_debug_log_keeps_the_drivers_own_words(
    write_config: Callable[..., Path], tmp_path: Path, local_uri: str
) -> None:
    with refusing_port() as port:
        production = f"mongodb://127.0.0.1:{port}/prod?serverSelectionTimeoutMS=500"
        config = pair_config(write_config, tmp_path, local_uri, production)
        quiet = run_syncd(config, "sync", "to_production")
        debug = run_syncd(config, "--log-level", "DEBUG", "sync", "to_production")

    for ran in (quiet, debug):
        assert ran.code == 1, ran
        assert f"syncd: endpoint 'production' (mongodb://127.0.0.1:{port}/prod?" in ran.stderr
        assert f"is unreachable: connection refused (127.0.0.1:{port})" in ran.stderr
    assert "Topology Description" not in quiet.output
    driver = [line for line in debug.stderr.splitlines() if "Topology Description" in line]
    assert driver and all("DEBUG syncd.endpoints" in line for line in driver), debug
