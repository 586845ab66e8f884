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
from .monitoring.drift import DriftMonitor
from .redis_store import RedisStore

__all__ = ["Runtime", "get_runtime"]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What the agents share within one worker process."""

    settings: Settings
    metrics: Metrics
    store: RedisStore
    scorer: object | None = None
    #: drift counts of the served features, when the model card has a drift reference
    drift: DriftMonitor | None = None

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
        reference = scorer.card.drift_reference
        if reference:
            self.drift = DriftMonitor(
                reference,
                scorer.feature_names,
                half_life_events=s.drift_half_life_events,
                min_events=s.drift_min_events,
            )
        else:
            log.warning("model %s has no drift reference: no drift metric", scorer.version)
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
            on_error=lambda op: metrics.redis_errors.labels(operation=op).inc(),
        )
        _runtime = Runtime(settings=s, metrics=metrics, store=store)
    return _runtime
