"""Model lifecycle: which version is active, which ones shadow it, and the history.

The registry's index ``<models_dir>/LIFECYCLE.json`` holds the current state and every
change (promote, rollback, shadow), newest last. A version's status follows from it:

- ``active``: the one that scores and alerts;
- ``shadow``: scores alongside, never alerts;
- ``retired``: was active once, is no longer;
- ``candidate``: registered, never active.

The functions here are pure planners: given the state, they return the next state and
raise :class:`~app.exceptions.ModelError` when a step makes no sense (promote the
active version, roll back with no earlier version). ``fraudctl models promote|
rollback|shadow`` verifies the versions (:func:`~app.scoring.registry.verify_model`),
publishes the new state on ``fraud-control``, writes Redis and then this file.

Examples
--------
>>> lc = Lifecycle(active="v1")
>>> lc = plan_promote(lc, "v2", now_ms=1)
>>> lc.active, lc.status("v1"), lc.status("v2"), lc.status("v3")
('v2', 'retired', 'active', 'candidate')
>>> plan_rollback(lc, now_ms=2).active
'v1'
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal, Sequence

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..exceptions import ModelError
from .registry import active_file_version

__all__ = [
    "LIFECYCLE_NAME",
    "Status",
    "LifecycleEvent",
    "Lifecycle",
    "read_lifecycle",
    "write_lifecycle",
    "plan_promote",
    "plan_rollback",
    "plan_shadows",
]

LIFECYCLE_NAME = "LIFECYCLE.json"
Status = Literal["candidate", "active", "shadow", "retired"]


class LifecycleEvent(BaseModel):
    """One change of the served models."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    action: Literal["promote", "rollback", "shadow", "init"]
    active: str | None
    shadows: list[str] = Field(default_factory=list)
    time_ms: int = Field(description="UTC epoch ms.")
    by: str = ""
    forced: bool = Field(False, description="Promoted past a refusal of the promotion gate.")
    reason: str = Field("", description="Why, as given with --force --reason.")


class Lifecycle(BaseModel):
    """The served models and their history (``LIFECYCLE.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    active: str | None = None
    shadows: list[str] = Field(default_factory=list)
    history: list[LifecycleEvent] = Field(default_factory=list)

    def status(self, version: str) -> Status:
        """``active``, ``shadow``, ``retired`` or ``candidate`` (see the module doc)."""
        if version == self.active:
            return "active"
        if version in self.shadows:
            return "shadow"
        if any(e.active == version for e in self.history):
            return "retired"
        return "candidate"

    def _then(self, action: str, active: str | None, shadows: Sequence[str], now_ms: int,
              by: str, forced: bool = False, reason: str = "") -> "Lifecycle":
        shadows = [s for s in dict.fromkeys(shadows) if s != active]
        event = LifecycleEvent(action=action, active=active, shadows=shadows, time_ms=now_ms,
                               by=by, forced=forced, reason=reason)
        history = list(self.history)
        if not history and self.active is not None:  # record what was served before
            history.append(LifecycleEvent(action="init", active=self.active,
                                          shadows=list(self.shadows), time_ms=now_ms, by=by))
        return Lifecycle(active=active, shadows=shadows, history=[*history, event])


def read_lifecycle(models_dir: str | Path) -> Lifecycle:
    """The registry's lifecycle; without ``LIFECYCLE.json``, ``models/ACTIVE`` is active.

    Raises
    ------
    ModelError
        The file exists but is not a valid lifecycle.
    """
    path = Path(models_dir) / LIFECYCLE_NAME
    try:
        return Lifecycle.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return Lifecycle(active=active_file_version(models_dir))
    except (ValidationError, OSError) as exc:
        raise ModelError(f"{path} is not a valid lifecycle file ({str(exc).splitlines()[0]})")


def write_lifecycle(models_dir: str | Path, lifecycle: Lifecycle) -> None:
    """Write ``LIFECYCLE.json`` atomically (readable by all, like the registry)."""
    path = Path(models_dir) / LIFECYCLE_NAME
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(lifecycle.model_dump_json(indent=2) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def plan_promote(lc: Lifecycle, version: str, now_ms: int, by: str = "",
                 forced: bool = False, reason: str = "") -> Lifecycle:
    """Make ``version`` active; it stops being a shadow, the old active retires.

    ``forced`` and ``reason`` record a promotion made past the promotion gate
    (:func:`app.scoring.compare.promotion_gate`).

    Raises
    ------
    ModelError
        ``version`` is active already.
    """
    if version == lc.active:
        raise ModelError(f"model {version} is active already")
    return lc._then("promote", version, lc.shadows, now_ms, by, forced, reason)


def plan_rollback(lc: Lifecycle, now_ms: int, to: str | None = None, by: str = "") -> Lifecycle:
    """Make the previously active version (or ``to``, a retired one) active again.

    Raises
    ------
    ModelError
        No earlier active version, or ``to`` was never active or is active now.
    """
    earlier = [e.active for e in lc.history if e.active and e.active != lc.active]
    if to is None:
        # the version active before the current one took over
        previous = None
        for e in reversed(lc.history):
            if e.active != lc.active and e.active is not None:
                previous = e.active
                break
        if previous is None:
            raise ModelError(
                f"nothing to roll back to: no version was active before {lc.active}"
            )
        to = previous
    elif to == lc.active:
        raise ModelError(f"model {to} is active already")
    elif to not in earlier:
        raise ModelError(
            f"model {to} was never active; roll back to one of {sorted(set(earlier))} "
            "or promote it"
        )
    return lc._then("rollback", to, lc.shadows, now_ms, by)


def plan_shadows(lc: Lifecycle, versions: Sequence[str], now_ms: int, by: str = "") -> Lifecycle:
    """Set the shadow versions (empty: none); the active one cannot shadow itself.

    Raises
    ------
    ModelError
        No active version, or ``versions`` names the active one.
    """
    if lc.active is None:
        raise ModelError("no active model: promote one before adding shadows")
    if lc.active in versions:
        raise ModelError(f"model {lc.active} is active: it cannot shadow itself")
    return lc._then("shadow", lc.active, versions, now_ms, by)
