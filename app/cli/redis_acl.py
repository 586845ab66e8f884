"""``fraudctl redis-acl``: the Redis users of every component, as ACL file lines."""

from __future__ import annotations

from pathlib import Path

import typer

from ..config import Settings, read_secret_file
from ..redis_acl import REDIS_USERS, acl_lines
from .base import cli, fail, settings_epilog

__all__ = ["redis_acl_command"]


@cli.command("redis-acl", epilog=settings_epilog("REDIS_KEY_PREFIX"))
def redis_acl_command(
    password_file: list[str] = typer.Option(
        [], "--password-file", metavar="USER=FILE",
        help="A user's password, from a file others may not read (repeat per user); a user "
        "without one is written `off`.",
    ),
) -> None:
    """Print the ACL file lines (redis.conf `aclfile`) of the Redis users: one per component,
    with only the keys and commands it needs; passwords as their SHA-256."""
    names = {u.name for u in REDIS_USERS}
    passwords = {}
    for item in password_file:
        user, sep, path = item.partition("=")
        if not sep or user not in names:
            fail(f"--password-file {item!r}: expected USER=FILE with USER one of {sorted(names)}")
        try:
            passwords[user] = read_secret_file(Path(path), f"--password-file {user}")
        except ValueError as exc:
            fail(str(exc))
    for line in acl_lines(Settings().redis_key_prefix, passwords):
        print(line)
