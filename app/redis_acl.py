"""Redis users per component, pure: the keys and commands each one needs, as ACL rules.

One table (:data:`REDIS_USERS`) says what each component of the service does in Redis;
:func:`acl_lines` renders it as ``users.acl`` lines (``aclfile`` of redis.conf, or
``ACL SETUSER``), the password of each user as its SHA-256 (the file holds no password).
``fraudctl redis acl`` prints them; docs/security.md shows the table.

Key permissions use Redis 7's read/write key selectors: ``%R~`` read only, ``~`` read
and write. No user may run ``FLUSHDB``, ``FLUSHALL``, ``KEYS``, ``CONFIG`` or any command
outside its list.

Examples
--------
>>> lines = acl_lines("fraud:", {"fraud-review": "pw"})
>>> print(lines[1])  # doctest: +NORMALIZE_WHITESPACE
user fraud-review on #30c952fab122c3f9759f02a6d95c3758b246b4fee239957b2d4fee46e26170c4 resetkeys
~fraud:rules:current resetchannels -@all +get +ping +set
>>> lines[0].split()[:3]  # no password given: the user cannot log in
['user', 'fraud-worker', 'off']
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping

__all__ = ["RedisUser", "REDIS_USERS", "acl_lines"]


@dataclass(frozen=True)
class RedisUser:
    """One component's Redis user.

    Attributes
    ----------
    name : str
        The user name (``REDIS_URL=redis://<name>@host/db`` with ``REDIS_PASSWORD``).
    component : str
        Who uses it.
    reads : tuple of str
        Key patterns (after ``REDIS_KEY_PREFIX``) it reads only.
    writes : tuple of str
        Key patterns it reads and writes.
    commands : tuple of str
        The commands it may run (lower case).
    """

    name: str
    component: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    commands: tuple[str, ...]


#: Every component's user: the worker (alert idempotency keys; reads the model and rules
#: in force), the review console (the block list of the rules in force) and the operator
#: CLI (``fraudctl models``, ``rules``, ``dead-letters redrive``).
REDIS_USERS: tuple[RedisUser, ...] = (
    RedisUser(
        "fraud-worker", "worker (python -m app worker)",
        reads=("model:active", "model:shadows", "rules:current"),
        writes=("alerted:*", "alerting:*"),
        commands=("eval", "evalsha", "exec", "get", "mget", "multi", "ping", "select", "set", "del"),
    ),
    RedisUser(
        "fraud-review", "review console (fraudctl review serve)",
        reads=(), writes=("rules:current",), commands=("get", "ping", "set"),
    ),
    RedisUser(
        "fraud-operator", "operator CLI (fraudctl models, rules, dead-letters)",
        reads=(), writes=("model:active", "model:shadows", "rules:current", "redriven:*"),
        commands=("exec", "get", "mget", "multi", "ping", "select", "set"),
    ),
)


def _hash(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def acl_lines(prefix: str, passwords: Mapping[str, str]) -> list[str]:
    """ACL file lines for every user of :data:`REDIS_USERS`.

    Parameters
    ----------
    prefix : str
        ``REDIS_KEY_PREFIX`` (every key pattern starts with it).
    passwords : mapping of str to str
        User name -> password; a user without one is rendered ``off`` (cannot log in).

    Returns
    -------
    list of str
        One ``user ...`` line per user, in :data:`REDIS_USERS` order.
    """
    out = []
    for u in REDIS_USERS:
        password = passwords.get(u.name)
        auth = f"on #{_hash(password)}" if password else "off"
        keys = " ".join([f"%R~{prefix}{p}" for p in u.reads] + [f"~{prefix}{p}" for p in u.writes])
        commands = " ".join(f"+{c}" for c in sorted(u.commands))
        out.append(f"user {u.name} {auth} resetkeys {keys} resetchannels -@all {commands}")
    return out
