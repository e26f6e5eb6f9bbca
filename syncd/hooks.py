"""Hooks run after a flow succeeds: the post-push password reset of named users.

Their writes are recorded in the sync memory, so the next sync sees no drift from them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from functools import partial
from typing import Any

import bcrypt
from bson.raw_bson import RawBSONDocument

from syncd.config.model import Config, Flow, ResetPasswordsHook
from syncd.config.secrets import resolve
from syncd.endpoints import Connected
from syncd.errors import SyncdError
from syncd.mongo.rawbson import digest, id_key, raw_id
from syncd.mongo.retry import with_retries
from syncd.state.memory import Pair, SyncMemory

log = logging.getLogger("syncd.hooks")


class HookFailed(SyncdError):
    pass


def bcrypt_hash(password: str, cost: int) -> str:
    """A Devise-compatible hash: bcrypt with the `$2a$` prefix."""
    salt = bcrypt.gensalt(rounds=cost, prefix=b"2a")
    return str(bcrypt.hashpw(password.encode("utf-8"), salt).decode("ascii"))


def check_hooks(config: Config, flow: Flow) -> None:
    """Read every `after` hook's secret before the sync writes anything.

    A push whose password reset cannot run would leave local passwords on the target.
    """
    for name in flow.after:
        hook = config.hooks[name]
        resolve(hook.password, what=f"hook '{hook.name}' password")


def run_hooks(
    config: Config,
    flow: Flow,
    target: Connected,
    memory: SyncMemory,
    pair: Pair,
    lease: Callable[[], None],
    only_for: Collection[str] | None = None,
) -> list[str]:
    """The flow's `after` hooks, each once the run's `lease` check passes (not its stop
    check: a push stopped between its writes and its hooks would leave local passwords on
    the target); their writes are recorded in the run's `memory`. With `only_for`, only
    the hooks whose collection is in it (a continuous batch runs the hooks of the
    collections it wrote)."""
    messages = []
    for name in flow.after:
        hook = config.hooks[name]
        if only_for is not None and hook.collection not in only_for:
            continue
        lease()  # still holding the write lease?
        try:
            messages += reset_passwords(flow, hook, target, memory, pair)
        except SyncdError:
            raise
        except Exception as exc:
            raise HookFailed(f"hook '{name}' failed: {type(exc).__name__}: {exc}") from None
    return messages


def reset_passwords(
    flow: Flow, hook: ResetPasswordsHook, target: Connected, memory: SyncMemory, pair: Pair
) -> list[str]:
    password = resolve(hook.password, what=f"hook '{hook.name}' password")
    coll = target.db[hook.collection]
    raw = coll.with_options(
        codec_options=coll.codec_options.with_options(document_class=RawBSONDocument)
    )
    messages = []
    reset = 0
    for user in hook.users:
        change = {"$set": {hook.password_field: bcrypt_hash(password, hook.cost)}}
        result = with_retries(  # a $set: the same result when retried
            partial(coll.update_one, {hook.match_field: user}, change),
            what=f"hook {hook.name}",
        )
        if result.matched_count == 0:
            message = f"hook '{hook.name}': user {user} not found in {hook.collection}"
            log.warning(message)
            messages.append(message)
            continue
        reset += 1
        document: Any = with_retries(
            partial(raw.find_one, {hook.match_field: user}), what=f"hook {hook.name}"
        )
        if document is not None:
            data = bytes(document.raw)
            memory.update_side(
                pair, hook.collection, flow.target, id_key(raw_id(data)), digest(data)
            )
    messages.append(f"hook '{hook.name}': reset the password of {reset} of {len(hook.users)} users")
    log.info("passwords reset", extra={"hook": hook.name, "users": reset})
    return messages
