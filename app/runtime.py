"""Per-worker runtime objects: settings, metrics, Redis store and the loaded model.

Built lazily once per process, so importing the app (``faust -A app.main``) does not
touch Redis or the model registry.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from .config import Settings, get_settings
from .metrics import Metrics
from .redis_store import RedisStore, redis_client_options

__all__ = ["Runtime", "get_runtime"]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the agents share within one worker process."""

    settings: Settings
    metrics: Metrics
    store: RedisStore
    scorer: object | None = None

    async def load_model(self):
        """Load the active model: Redis ``model:active``, else MODEL_VERSION, else
        ``models/ACTIVE``.

        Raises
        ------
        ModelError, ModelIntegrityError
            The artifact is missing or does not match its card.
        """
        from .scoring.model import Scorer
        from .scoring.registry import default_version, load_model

        s = self.settings
        version = await self.store.active_model_version()
        source = "redis"
        if version is None:
            version, source = s.model_version or default_version(s.models_dir), "settings"
        scorer = Scorer(load_model(version, s.models_dir))
        self.scorer = scorer
        self.metrics.model_info.info({"version": scorer.version, "source": source})
        log.info("serving model %s (from %s), pid %s", scorer.version, source, os.getpid())
        return scorer


_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process's :class:`Runtime`, its metrics on a registry of its own (with the
    process, platform and GC collectors)."""
    global _runtime
    if _runtime is None:
        s = get_settings()
        registry = CollectorRegistry()
        for collector in (ProcessCollector, PlatformCollector, GCCollector):
            collector(registry=registry)
        metrics = Metrics(registry)
        store = RedisStore(
            s.redis_url.get_secret_value(),
            s.redis_key_prefix,
            retry_max_seconds=s.redis_retry_max_seconds,
            retry_initial_delay_seconds=s.redis_retry_initial_delay_seconds,
            retry_max_delay_seconds=max(
                s.redis_retry_initial_delay_seconds, s.redis_retry_max_delay_seconds
            ),
            on_error=lambda op: metrics.redis_errors.labels(operation=op).inc(),
            on_wait=metrics.redis_retry_wait.inc,
            on_up=lambda up: metrics.redis_up.set(1 if up else 0),
            client_options=redis_client_options(s),
        )
        _runtime = Runtime(settings=s, metrics=metrics, store=store)
    return _runtime
