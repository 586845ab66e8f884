"""Per-worker runtime objects: settings, metrics, Redis store and the loaded model.

Built lazily once per process, so importing the app (``faust -A app.stream.main``) does not
touch Redis or the model registry.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from ..config import Settings, get_settings
from ..logsummary import OutageLog, RateLimitedLog
from ..metrics import Metrics
from ..monitoring.drift import DriftMonitor
from ..redis_store import RedisStore, redis_client_options, redis_url_of

__all__ = ["Runtime", "get_runtime"]

log = logging.getLogger(__name__)


def _load_scorer(version: str, models_dir):
    """``Scorer(load_model(version, models_dir))``, its imports included (run in a
    thread by :meth:`Runtime.load_model`)."""
    from ..scoring.model import Scorer
    from ..scoring.registry import load_model

    return Scorer(load_model(version, models_dir))


@dataclass
class Runtime:
    """What the agents share within one worker process."""

    settings: Settings
    metrics: Metrics
    store: RedisStore
    scorer: object | None = None
    #: drift counts of the served features, when the model card has a drift reference
    drift: DriftMonitor | None = None
    controller: object | None = None
    #: dead-letter WARN lines, at most one per (reason, partition) per
    #: DEAD_LETTER_LOG_INTERVAL_SECONDS (the rest summarised)
    dead_letter_log: RateLimitedLog = field(
        default_factory=lambda: RateLimitedLog(log.warning), repr=False
    )
    #: searches the alert topic for reserved, unmarked alert ids (created on first use)
    _alert_lookup: object | None = field(default=None, repr=False)
    _controller_lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)

    async def load_model(self):
        """Load the active model: Redis ``model:active``, else MODEL_VERSION, else
        ``models/ACTIVE``.

        Raises
        ------
        ModelError, ModelIntegrityError
            The artifact is missing or does not match its card.
        """
        s = self.settings
        version, source = await self._active_version()
        # unpickling imports scikit-learn (about a second): in a thread, so that the
        # event loop goes on (a starting worker joins its consumer group meanwhile)
        scorer = await asyncio.to_thread(_load_scorer, version, s.models_dir)
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


    async def _active_version(self) -> tuple[str, str]:
        """The active model version and where it came from ("redis" or "settings")."""
        from ..scoring.registry import default_version

        s = self.settings
        version = await self.store.active_model_version()
        if version is not None:
            return version, "redis"
        return s.model_version or default_version(s.models_dir), "settings"

    async def check_model(self) -> str:
        """Verify the model :meth:`load_model` would load, without unpickling it (card,
        scikit-learn version, feature names, sha256 of the artifact:
        :func:`app.scoring.registry.verify_model`): the worker's start check, which
        leaves the scikit-learn import and the load to the scoring agent, while Faust
        starts.

        Returns
        -------
        str
            The version.

        Raises
        ------
        ModelError, ModelIntegrityError, ModelVersionError
            As :func:`app.scoring.registry.verify_model`.
        """
        from ..scoring.registry import verify_model

        version, _ = await self._active_version()
        verify_model(version, self.settings.models_dir)
        return version

    async def load_controller(self):
        """The worker's :class:`app.decisions.Controller`: the active model (as
        :meth:`load_model`), the shadow versions and the rule set stored in Redis.

        A shadow or a stored rule set that fails verification is logged and skipped (the
        control topics will bring the next good state); the active model must load.
        Built once: later calls (the scoring agent, the control task) return the same one.

        Raises
        ------
        ModelError, ModelIntegrityError
            The active model is missing or does not match its card.
        """
        async with self._controller_lock:
            if self.controller is None:
                self.controller = await self._build_controller()
                # what the worker has built by now (modules, the app, the models) lives
                # as long as the process: out of the cyclic collector's reach, so its
                # full collections, which the allocations of every batch trigger,
                # traverse only what came after
                gc.freeze()
        return self.controller

    async def _build_controller(self):
        s = self.settings
        active = self.scorer or await self.load_model()
        from ..decisions import Controller, parse_rule_set
        from ..decisions.cold_start import ColdStartRule
        from ..exceptions import FraudError
        from ..scoring.model import Scorer

        shadows = []
        for version in await self.store.shadow_model_versions():
            try:
                shadows.append(Scorer.from_registry(s.models_dir, version))
            except FraudError as exc:
                log.error("shadow model %s refused: %s", version, exc)
        rules = None
        raw = await self.store.current_rules()
        if raw:
            try:
                rules = parse_rule_set(raw, score_outcome=s.score_outcome)
            except FraudError as exc:
                log.error("rule set in Redis refused, deciding by the threshold only: %s", exc)
        controller = Controller(
            active,
            loader=lambda v: Scorer.from_registry(s.models_dir, v),
            rules=rules,
            shadows=shadows,
            threshold=s.alert_threshold,
            score_outcome=s.score_outcome,
            cold_start=ColdStartRule(s.cold_start_min_account_tx, s.cold_start_threshold),
            alerts_from_ms=s.alerts_from_time_ms,
        )
        version, shadow_versions, label = controller.versions
        self.metrics.rule_set_info.info({"version": label})
        log.info("serving %s, shadows %s, rules %s", version, list(shadow_versions), label)
        return controller

    def alert_lookup(self):
        """The worker's :class:`app.alerting.lookup.AlertTopicLookup`, created on first
        use (only a worker that meets a reserved, unmarked alert id needs one)."""
        if self._alert_lookup is None:
            from ..alerting.lookup import AlertTopicLookup

            self._alert_lookup = AlertTopicLookup(self.settings)
        return self._alert_lookup

    async def close(self) -> None:
        """Stop what the runtime started that needs stopping: the alert topic lookup's
        consumer (the worker calls it at shutdown)."""
        lookup, self._alert_lookup = self._alert_lookup, None
        if lookup is not None:
            await lookup.close()

    def on_control(self, result) -> None:
        """After a control message (the :class:`app.stream.control.ControlFollower` callback):
        count it and, when applied, name the models and rules now in use."""
        self.metrics.observe_control(result)
        if result.applied and self.controller is not None:
            version, _, label = self.controller.versions
            self.metrics.model_info.info({"version": version, "source": "control"})
            self.metrics.rule_set_info.info({"version": label})


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
        redis_outage = OutageLog("Redis", log.warning, log.warning)
        store = RedisStore(
            redis_url_of(s),
            s.redis_key_prefix,
            retry_max_seconds=s.redis_retry_max_seconds,
            retry_initial_delay_seconds=s.redis_retry_initial_delay_seconds,
            retry_max_delay_seconds=max(
                s.redis_retry_initial_delay_seconds, s.redis_retry_max_delay_seconds
            ),
            on_error=lambda op: metrics.redis_errors.labels(operation=op).inc(),
            on_wait=metrics.redis_retry_wait.inc,
            on_up=lambda up: (metrics.redis_up.set(1 if up else 0), redis_outage.observe(up)),
            client_options=redis_client_options(s),
        )
        _runtime = Runtime(
            settings=s, metrics=metrics, store=store,
            dead_letter_log=RateLimitedLog(log.warning, s.dead_letter_log_interval_seconds),
        )
    return _runtime
