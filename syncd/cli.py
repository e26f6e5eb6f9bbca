"""The `syncd` command: parse arguments, load the config, call one action, map errors to exits."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from pymongo.errors import PyMongoError

from syncd import __version__
from syncd.config import Config, ConfigInvalid, load_config
from syncd.config.secrets import redact
from syncd.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, SyncdError
from syncd.log import setup_logging

log = logging.getLogger("syncd")

# command name -> "module:function"; each takes (config, args) and returns an exit code.
ACTIONS = {
    "validate": "syncd.cli:validate_action",
    "status": "syncd.actions.status:run",
    "sync": "syncd.actions.sync:run",
    "verify": "syncd.actions.verify:run",
    "diff": "syncd.actions.diff:run",
    "backup.create": "syncd.actions.backup:create",
    "backup.list": "syncd.actions.backup:list_",
    "backup.restore": "syncd.actions.backup:restore",
    "backup.import": "syncd.actions.backup:import_",
    "run": "syncd.daemon:run",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description="Keep MongoDB databases in step under a YAML policy.",
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    _add_common(parser)
    parser.set_defaults(config=None, log_format="text", log_level="INFO")
    common = argparse.ArgumentParser(add_help=False)
    _add_common(common)
    sub = _Subparsers(
        parser.add_subparsers(dest="command", required=True, metavar="COMMAND"), common
    )

    sub.add_parser("validate", help="check the config and exit")

    status = sub.add_parser("status", help="endpoints, collections, pending changes, last sync")
    status.add_argument("flow", nargs="?", help="limit to one flow")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    sync = sub.add_parser("sync", help="run a flow, whole or some collections")
    sync.add_argument("flow")
    sync.add_argument("-C", "--collection", dest="collections", action="append", metavar="COLL")
    sync.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    sync.add_argument(
        "--full", action="store_true", help="read both sides whole instead of following changes"
    )
    sync.add_argument("--yes", action="store_true", help="skip confirmations (FORCE=true too)")
    sync.add_argument("--drift", choices=("abort", "overwrite", "merge"))
    sync.add_argument("--no-wait", action="store_true", help="refuse if the target is busy")
    sync.add_argument("--json", action="store_true", help="print the result as JSON")

    verify = sub.add_parser(
        "verify", help="compare both sides of a flow now, document by document; writes nothing"
    )
    verify.add_argument("flow")
    verify.add_argument("-C", "--collection", dest="collections", action="append", metavar="COLL")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")

    diff = sub.add_parser(
        "diff", help="what a sync would change and what drifted, field by field; writes nothing"
    )
    diff.add_argument("flow")
    diff.add_argument("-C", "--collection", dest="collections", action="append", metavar="COLL")
    diff.add_argument(
        "--id",
        dest="ids",
        action="append",
        metavar="ID",
        help="an _id: ObjectId hex, number or string",
    )
    diff.add_argument(
        "--limit", type=_positive, default=50, metavar="N", help="documents shown (default 50)"
    )
    diff.add_argument("--json", action="store_true", help="print the result as JSON")

    backup = sub.add_parser("backup", help="create, list, restore and import backups")
    backup_sub = _Subparsers(
        backup.add_subparsers(dest="backup_command", required=True, metavar="ACTION"), common
    )
    create = backup_sub.add_parser("create", help="snapshot an endpoint's database")
    create.add_argument("endpoint")
    create.add_argument("-C", "--collection", dest="collections", action="append", metavar="COLL")
    listing = backup_sub.add_parser("list", help="backups, newest first")
    listing.add_argument("--json", action="store_true")
    listing.add_argument("--verify", action="store_true", help="re-hash every file")
    restore = backup_sub.add_parser("restore", help="restore a backup")
    restore.add_argument("name")
    restore.add_argument("--to", dest="to", metavar="ENDPOINT")
    restore.add_argument("-C", "--collection", dest="collections", action="append", metavar="COLL")
    restore.add_argument("--yes", action="store_true")
    restore.add_argument("--no-wait", action="store_true")
    imported = backup_sub.add_parser(
        "import", help="take a mongodump directory (one database) into the backup store"
    )
    imported.add_argument("path", type=Path, metavar="PATH")
    imported.add_argument("--endpoint", required=True, metavar="ENDPOINT")

    sub.add_parser("run", help="the daemon: schedules, signals, metrics")

    demo = sub.add_parser("demo", help="the whole job on embedded endpoints, no MongoDB needed")
    demo.add_argument("--serve", action="store_true", help="keep the daemon running until Ctrl-C")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a number of documents (1 or more), got {text!r}"
        )
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    """Options accepted before and after the command (`syncd -c F validate`, `syncd validate -c F`).

    Defaults are suppressed so a value given before the command is not reset by the subparser.
    """
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="config file (default: $SYNCD_CONFIG or ./syncd.yaml)",
    )
    parser.add_argument("--log-format", choices=("text", "json"), default=argparse.SUPPRESS)
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        default=argparse.SUPPRESS,
        help="DEBUG also logs the traceback of an unexpected error",
    )


class _Subparsers:
    """add_parser with the common options attached to every subcommand."""

    def __init__(
        self,
        action: argparse._SubParsersAction[argparse.ArgumentParser],
        common: argparse.ArgumentParser,
    ) -> None:
        self.action = action
        self.common = common

    def add_parser(self, name: str, *, help: str) -> argparse.ArgumentParser:  # noqa: A002
        return self.action.add_parser(name, parents=[self.common], help=help)


def config_path(args: argparse.Namespace) -> Path:
    if args.config is not None:
        return Path(args.config)
    return Path(os.environ.get("SYNCD_CONFIG") or "syncd.yaml")


def forced(args: argparse.Namespace) -> bool:
    """--yes or FORCE=true (the seed's CI/CD habit)."""
    return bool(getattr(args, "yes", False)) or os.environ.get("FORCE", "").lower() in (
        "1",
        "true",
        "yes",
    )


def ask(question: str) -> bool:
    """A y/N question on the terminal: only "y" or "yes" is a yes. End of input (Ctrl-D at
    the prompt) is a no, so it is refused like any other no, not an error."""
    answer = _read_line(f"{question} [y/N] ")
    if not answer:
        print(file=sys.stderr)  # the prompt's line, ended for what follows
        return False
    return answer.strip().lower() in ("y", "yes")


def _read_line(prompt: str) -> str:
    """Show `prompt`, then read one line from stdin ('' at its end) that Ctrl-C interrupts.

    `input()` would block in read(2) in the main thread; SIGINT goes to any thread of the
    process, often one of pymongo's monitor threads, and then that read is not interrupted:
    Ctrl-C would do nothing until Enter. So the main thread waits in select() on stdin and
    on the signal wakeup pipe, which Python's signal handler writes to from whichever thread
    the signal reached; once awake, the main thread raises KeyboardInterrupt as usual. The
    pipe is in place before the prompt shows: a Ctrl-C the moment it appears still counts."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    previous = signal.set_wakeup_fd(write_end)
    try:
        sys.stdout.write(prompt)
        sys.stdout.flush()
        while True:
            ready, _, _ = select.select([sys.stdin, read_end], [], [])
            if sys.stdin in ready:
                return sys.stdin.readline()
            os.read(read_end, 512)  # a signal whose handler did not raise: keep waiting
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read_end)
        os.close(write_end)


def validate_action(config: Config, args: argparse.Namespace) -> int:
    print(
        f"{config.path}: OK ({len(config.endpoints)} endpoints, {len(config.flows)} flows, "
        f"{len(config.collections)} collection rules, {len(config.schedules)} schedules)"
    )
    return EXIT_OK


def _action(command: str) -> Callable[[Config, argparse.Namespace], int]:
    module_name, function_name = ACTIONS[command].split(":")
    module = importlib.import_module(module_name)
    action: Callable[[Config, argparse.Namespace], int] = getattr(module, function_name)
    return action


def _command_name(args: argparse.Namespace) -> str:
    if args.command == "backup":
        return f"backup.{args.backup_command}"
    return str(args.command)


def run() -> NoReturn:
    """The `syncd` command (the console script): `main`, then exit at once.

    Every client is closed when `main` returns; what the interpreter would still do is
    pymongo's exit handler joining its monitor threads, which wake only every half second
    to notice their client is closed: up to 0.5 s added to every command. So once output
    and logs are flushed and no thread but daemon ones is left, the process ends there."""
    code = main()
    logging.shutdown()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: nothing more can be said; the exit code still tells
        pass
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        sys.exit(code)  # a thread still working: the interpreter waits for it as usual
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_USAGE
    setup_logging(
        fmt=args.log_format, level=args.log_level, journald=bool(os.environ.get("JOURNAL_STREAM"))
    )
    try:
        if args.command == "demo":
            demo = importlib.import_module("syncd.demo")
            code: int = demo.run(args)
            return code
        config = load_config(config_path(args))
        return _action(_command_name(args))(config, args)
    except ConfigInvalid as exc:
        for issue in exc.issues:
            print(issue, file=sys.stderr)
        count = len(exc.issues)
        print(f"syncd: config has {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return exc.exit_code
    except SyncdError as exc:
        for line in exc.lines():
            print(f"syncd: {line}", file=sys.stderr)
        return exc.exit_code
    except PyMongoError as exc:
        print(f"syncd: {mongo_error_message(exc)}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("syncd: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:  # not one of syncd's own errors: a bug; its traceback helps
        log.debug("unexpected error", exc_info=exc)
        print(f"syncd: {unexpected_error_message(exc)}", file=sys.stderr)
        return EXIT_FAILED


def unexpected_error_message(exc: BaseException) -> str:
    """An error syncd did not expect, with its type and message (redacted); the traceback
    goes to the log at DEBUG."""
    text = redact(str(exc)).strip() or "(no message)"
    return (
        f"unexpected error: {type(exc).__name__}: {text}; this is a bug in syncd: "
        "run again with --log-level debug to see where it happened, and report it"
    )


def mongo_error_message(exc: PyMongoError) -> str:
    """One line for a server error that got past the endpoint checks (e.g. a user without the
    right roles: `ping` needs no authentication, `listCollections` does). No traceback."""
    from syncd.mongo.retry import first_line

    return (
        f"MongoDB error: {first_line(exc)} ({type(exc).__name__}); "
        "check the endpoint's credentials and the user's roles"
    )


if __name__ == "__main__":
    sys.exit(main())
