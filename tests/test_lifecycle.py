"""Model lifecycle: verification, planners, alert budget, and the control plane against the
real broker and the real Redis (``fraudctl models promote|rollback|shadow``,
``fraudctl rules apply|show``, :class:`app.stream.control.ControlFollower`)."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from app.cli import cli
from app.config import Settings, get_settings
from app.stream.control import ControlFollower
from app.decisions import Controller
from app.exceptions import ModelError, ModelIntegrityError
from app.features import FEATURE_NAMES
from app.scoring.lifecycle import (
    Lifecycle,
    plan_promote,
    plan_rollback,
    plan_shadows,
    read_lifecycle,
)
from app.scoring.model import Scorer
from app.scoring.registry import (
    load_model,
    read_card,
    save_model,
    set_alert_threshold,
    verify_model,
)
from app.scoring.threshold import threshold_for_budget

SHIPPED = Path(__file__).resolve().parent.parent / "models"


def make_registry(root: Path, extra: tuple[str, ...] = ("v2-test", "v3-test", "v4-test")) -> tuple[Path, str]:
    """A registry with the shipped model and copies of it under other version names."""
    models = root / "models"
    models.mkdir()
    base = load_model(None, SHIPPED)
    shutil.copytree(base.path, models / base.version)
    (models / "ACTIVE").write_text(base.version + "\n")
    c = base.card
    for v in extra:
        save_model(base.estimator, models, data=c.data, metrics=c.metrics, baseline=c.baseline,
                   alert_threshold=c.alert_threshold, threshold_rationale="copy for tests",
                   justification=c.justification, version=v)
    return models, base.version


def tamper(models: Path, version: str) -> None:
    path = models / version / "model.joblib"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


# --- verification ----------------------------------------------------------------------


def test_verify_refuses_a_changed_artifact_or_other_feature_names(tmp_path):
    models, base = make_registry(tmp_path, ("v2-test",))
    card, artifact = verify_model("v2-test", models)
    assert card.version == "v2-test" and len(artifact) == card.artifact_bytes
    with pytest.raises(ModelIntegrityError, match=f"not in code: \\['{FEATURE_NAMES[0]}'\\]; "
                       "not in card: \\['x'\\]"):
        verify_model("v2-test", models, [*FEATURE_NAMES, "x"][1:])
    tamper(models, "v2-test")
    with pytest.raises(ModelIntegrityError, match="sha256 of model.joblib is .* the artifact was changed"):
        verify_model("v2-test", models)
    with pytest.raises(ModelIntegrityError):
        load_model("v2-test", models)
    with pytest.raises(ModelError, match="known versions"):
        verify_model("v404", models)


def test_threshold_written_into_the_card_keeps_the_artifact(tmp_path):
    models, base = make_registry(tmp_path, ())
    card = set_alert_threshold(base, 0.1234, "budget test", models)
    assert read_card(base, models).alert_threshold == 0.1234 == card.alert_threshold
    verify_model(base, models)  # sha256 of the artifact unchanged
    with pytest.raises(ModelError, match="in \\[0, 1\\]"):
        set_alert_threshold(base, 1.5, "", models)


# --- planners ----------------------------------------------------------------------------


def test_promote_rollback_shadow_and_statuses():
    lc = Lifecycle(active="v1")
    lc = plan_promote(lc, "v2", now_ms=1)
    lc = plan_shadows(lc, ["v3"], now_ms=2)
    assert [lc.status(v) for v in ("v1", "v2", "v3", "v4")] == [
        "retired", "active", "shadow", "candidate"]
    lc = plan_promote(lc, "v3", now_ms=3)  # the shadow wins: it is no longer a shadow
    assert (lc.active, lc.shadows) == ("v3", [])
    assert plan_rollback(lc, now_ms=4).active == "v2"
    assert plan_rollback(lc, now_ms=4, to="v1").active == "v1"
    assert [e.action for e in lc.history] == ["init", "promote", "shadow", "promote"]
    with pytest.raises(ModelError, match="active already"):
        plan_promote(lc, "v3", now_ms=5)
    with pytest.raises(ModelError, match="never active"):
        plan_rollback(lc, now_ms=5, to="v9")
    with pytest.raises(ModelError, match="cannot shadow itself"):
        plan_shadows(lc, ["v3"], now_ms=5)
    with pytest.raises(ModelError, match="nothing to roll back to"):
        plan_rollback(Lifecycle(active="v1"), now_ms=1)


# --- alert budget --------------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 4), st.floats(0, 1), st.booleans()), min_size=1,
                  max_size=200),
    budget=st.integers(1, 20),
    per=st.sampled_from(["day", "mean-day"]),
)
def test_budget_threshold_is_within_budget_and_the_lowest_such(data, budget, per):
    days = np.array([d for d, _, _ in data])
    scores = np.array([s for _, s, _ in data])
    labels = np.array([int(y) for _, _, y in data])
    c = threshold_for_budget(scores, days, labels, budget, per)
    counts = np.bincount(np.unique(days, return_inverse=True)[1][scores >= c.threshold],
                         minlength=c.days)
    if not c.within_budget:  # only when too many rows score exactly 1.0
        assert c.threshold == 1.0 and (scores == 1.0).sum() > budget
        return
    if per == "day":
        assert counts.max(initial=0) <= budget
    else:
        assert counts.sum() <= budget * c.days
    if c.threshold > 0:  # one step lower would break the budget (or alert nothing more)
        lower = scores >= round(c.threshold - 1e-4, 4)
        low_counts = np.bincount(np.unique(days, return_inverse=True)[1][lower], minlength=c.days)
        over = low_counts.max() > budget if per == "day" else low_counts.sum() > budget * c.days
        assert over or lower.sum() == (scores >= c.threshold).sum()
    assert c.alerts == int((scores >= c.threshold).sum())


def test_budget_arguments_are_checked():
    with pytest.raises(ValueError, match="budget"):
        threshold_for_budget(np.ones(2), np.ones(2), np.ones(2), 0)
    with pytest.raises(ValueError, match="equal non-zero lengths"):
        threshold_for_budget(np.ones(2), np.ones(3), np.ones(2), 1)


# --- against the real broker and Redis -------------------------------------------------------


@pytest.fixture
def control_env(broker, redis_url, monkeypatch, tmp_path):
    """Settings of this test: its own control topics, key prefix and broker."""
    tag = uuid.uuid4().hex[:8]
    env = {
        "KAFKA_BROKER_URL": broker.url, "REDIS_URL": redis_url,
        "REDIS_KEY_PREFIX": f"t-{tag}:", "CONTROL_TOPIC": f"control-{tag}",
        "RULES_TOPIC": f"rules-{tag}",
    }
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    yield Settings()
    get_settings.cache_clear()


def _follow_until(follower: ControlFollower, predicate, timeout_s: float = 10.0) -> list:
    async def run():
        await follower.start()
        results = await follower.catch_up()
        try:
            deadline = asyncio.get_running_loop().time() + timeout_s
            while not predicate(results):
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"control messages not seen in time: {results}")
                results += await follower.poll_once()
        finally:
            await follower.stop()
        return results

    return asyncio.run(run())


@pytest.mark.broker
def test_promote_shadow_rollback_reach_a_follower_and_tampering_is_refused(
    control_env, redis_client, tmp_path
):
    models, base = make_registry(tmp_path)
    s = control_env
    runner = CliRunner()

    def fraudctl(*args):
        return runner.invoke(cli, [*args, "--models-dir", str(models)])

    r = fraudctl("models", "promote", "v2-test")
    assert r.exit_code == 0, r.output
    r = fraudctl("models", "shadow", "set", "v3-test")
    assert r.exit_code == 0, r.output
    assert redis_client.get(f"{s.redis_key_prefix}model:active") == b"v2-test"
    assert orjson.loads(redis_client.get(f"{s.redis_key_prefix}model:shadows")) == ["v3-test"]
    assert read_lifecycle(models).status(base) == "retired"
    assert (models / "ACTIVE").read_text().strip() == "v2-test"
    listed = fraudctl("models", "list", "--no-redis")
    assert "shadow" in listed.stdout and "retired" in listed.stdout

    # a worker that starts now serves the base model and catches up from the topic
    ctl = Controller(Scorer.from_registry(models, base),
                     loader=lambda v: Scorer.from_registry(models, v))
    _follow_until(ControlFollower(s, ctl), lambda res: any(x.applied for x in res))
    assert ctl.versions[:2] == ("v2-test", ("v3-test",))

    # a tampered artifact: the CLI refuses it before publishing anything ...
    tamper(models, "v3-test")
    r = fraudctl("models", "promote", "v3-test")
    assert r.exit_code == 2 and "sha256" in r.output and "artifact was changed" in r.output
    assert redis_client.get(f"{s.redis_key_prefix}model:active") == b"v2-test"
    # ... and a worker refuses one changed after publishing, keeping its model (v3-test is
    # loaded already as a shadow, verified when it was loaded: take one it must load)
    from app.stream.control import CONTROL_KEY, publish
    from app.events import ModelControl, encode
    tamper(models, "v4-test")
    publish(s, s.control_topic, CONTROL_KEY, encode(ModelControl(
        action="promote", active_version="v4-test", issued_time_ms=0)))
    results = _follow_until(ControlFollower(s, ctl), lambda res: any(not x.applied for x in res))
    refused = [x for x in results if not x.applied][-1]
    assert "refused, still serving v2-test" in refused.detail and "sha256" in refused.detail
    assert ctl.snapshot().model_version == "v2-test"

    r = fraudctl("models", "rollback")  # would keep the (now tampered) shadow: refused
    assert r.exit_code == 2 and "v3-test: sha256" in r.output
    assert fraudctl("models", "shadow", "clear").exit_code == 0
    r = fraudctl("models", "rollback")
    assert r.exit_code == 0, r.output
    assert redis_client.get(f"{s.redis_key_prefix}model:active") == base.encode()


@pytest.mark.broker
def test_rules_apply_show_and_stale_versions(control_env, redis_client, tmp_path):
    s = control_env
    rules = {"id": "default", "version": 1, "rules": [
        {"id": "huge", "attribute": "transaction.amount", "op": ">", "value": 1000,
         "outcome": "block"}], "block": {"terminals": ["m666"]}}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    runner = CliRunner()
    r = runner.invoke(cli, ["rules", "apply", str(path)])
    assert r.exit_code == 0, r.output
    assert "default@1" in r.stdout
    shown = runner.invoke(cli, ["rules", "show", "--json"])
    assert json.loads(shown.stdout)["rules"][0]["id"] == "huge"
    again = runner.invoke(cli, ["rules", "apply", str(path)])
    assert again.exit_code == 2 and "not newer than default@1" in again.output
    path.write_text(json.dumps({**rules, "version": 2, "rules": [{**rules["rules"][0],
                                                                    "attribute": "nope"}]}))
    bad = runner.invoke(cli, ["rules", "apply", str(path)])
    assert bad.exit_code == 2 and "unknown attribute 'nope'" in bad.output
    path.write_text(json.dumps({**rules, "version": 2}))
    assert runner.invoke(cli, ["rules", "apply", str(path)]).exit_code == 0

    class Fake:
        version, alert_threshold = "v1", 0.5

    ctl = Controller(Fake(), loader=lambda v: Fake())
    _follow_until(ControlFollower(s, ctl), lambda res: sum(x.applied for x in res) >= 2)
    assert ctl.versions[2] == "default@2"


@pytest.mark.broker
def test_a_starting_worker_builds_its_controller_from_redis(control_env, redis_client, tmp_path):
    from prometheus_client import CollectorRegistry

    from app.decisions.controller import ApplyResult
    from app.metrics import Metrics
    from app.redis_store import RedisStore
    from app.stream.runtime import Runtime

    models, base = make_registry(tmp_path)
    s = control_env.model_copy(update={"models_dir": models})
    p = s.redis_key_prefix
    redis_client.set(f"{p}model:active", b"v2-test")
    tamper(models, "v4-test")
    redis_client.set(f"{p}model:shadows", orjson.dumps(["v3-test", "v4-test"]))
    redis_client.set(f"{p}rules:current", orjson.dumps({"id": "d", "version": 4}))
    metrics = Metrics(CollectorRegistry())

    async def build():
        rt = Runtime(settings=s, metrics=metrics, store=RedisStore(
            s.redis_url.get_secret_value(), p, retry_max_seconds=0.2, retry_initial_delay_seconds=0.05))
        try:
            ctl = await rt.load_controller()
            rt.on_control(ApplyResult("rules", False, "stale"))
            return ctl
        finally:
            await rt.store.close()

    ctl = asyncio.run(build())
    assert ctl.versions == ("v2-test", ("v3-test",), "d@4")  # the tampered shadow skipped
    assert metrics.control_messages.labels(kind="rules", result="refused")._value.get() == 1



def test_threshold_command_meets_the_budget_and_writes_the_card(tmp_path):
    from app.data.simulate import simulate, write_handbook_csv

    models, base = make_registry(tmp_path, ())
    data = write_handbook_csv(
        simulate(n_customers=300, n_terminals=1000, start_date="2018-06-01", n_days=50, seed=3),
        tmp_path / "sim.csv.gz")
    args = ["threshold", str(data), "--budget", "5", "--start", "2018-07-15", "--end",
            "2018-07-19", "--models-dir", str(models)]
    r = CliRunner().invoke(cli, [*args, "--write"])
    assert r.exit_code == 0, r.output
    assert "at most" in r.stdout and "precision" in r.stdout and "recall" in r.stdout
    card = read_card(base, models)
    assert f"threshold {card.alert_threshold:g} ->" in r.stdout
    assert card.threshold_rationale.startswith("at most 5 alerts per day on 2018-07-15..2018-07-19")
    most = int(r.stdout.split("at most ")[1].split(" ")[0])
    assert most <= 5
    bad = CliRunner().invoke(cli, [*args[:-2], "--models-dir", str(models), "--per", "week"])
    assert bad.exit_code == 2 and "--per" in bad.output


def test_a_control_follower_retries_when_the_brokers_time_out():
    """aiokafka's admin client raises a bare ``TimeoutError`` when too few brokers
    answer (two of three down): the follower logs it and retries, the worker goes on
    scoring with its snapshot (it crashed the worker before)."""
    import asyncio

    follower = object.__new__(ControlFollower)
    follower._consumer = None
    starts: list[int] = []

    async def start() -> None:
        starts.append(1)
        if len(starts) == 1:
            raise TimeoutError()
        raise asyncio.CancelledError()  # ends the test's run

    async def stop() -> None:
        return None

    follower.start, follower.stop = start, stop
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(follower.run(retry_delay_seconds=0.0))
    assert len(starts) == 2
