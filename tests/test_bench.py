"""The performance harness (``fraudctl bench``): a smoke run on tiny numbers.

Only the structure of the results and the counts are checked, never a timing: the
numbers of a run on a shared 2-core machine say nothing about the code.
"""

from __future__ import annotations

import doctest
import json

import pytest
from typer.testing import CliRunner

from app.cli import cli

pytestmark = [pytest.mark.broker, pytest.mark.slow]

N = 400
ACCOUNTS = 150


def test_bench_modules_doctests():
    from bench import clients, data, procs, profiling

    for module in (clients, data, procs, profiling):
        assert doctest.testmod(module).failed == 0, module.__name__


def test_top_entries_sums_self_and_total_samples():
    from bench.profiling import top_entries

    raw = (
        "<module> (app/__main__.py);run (faust/worker.py);score (app/scoring.py) 6\n"
        "<module> (app/__main__.py);run (faust/worker.py);loads (orjson) 3\n"
        "<module> (app/__main__.py);run (faust/worker.py) 1\n"
        "garbage line\n"
    )
    top = top_entries(raw, limit=3)
    assert top["samples"] == 10
    assert [e["function"] for e in top["self"]] == [
        "score (app/scoring.py)", "loads (orjson)", "run (faust/worker.py)"
    ]
    assert top["self"][0]["share"] == 0.6
    assert {e["package"]: e["samples"] for e in top["self_by_package"]} == {
        "app": 6, "orjson": 3, "faust": 1
    }
    # inclusive samples of the project's own functions only
    assert top["total"] == [
        {"function": "<module> (app/__main__.py)", "samples": 10, "share": 1.0},
        {"function": "score (app/scoring.py)", "samples": 6, "share": 0.6},
    ]


def test_bench_config_checks_its_ranges(tmp_path):
    from bench.harness import BenchConfig

    with pytest.raises(ValueError, match="phases must be among"):
        BenchConfig("kafka://127.0.0.1:9092", "redis://x", phases=("warp",))
    with pytest.raises(ValueError, match="n must be >= 1"):
        BenchConfig("kafka://127.0.0.1:9092", "redis://x", n=0)


def test_bench_smoke_run_has_every_result_and_the_right_counts(broker, redis_url, tmp_path):
    out_dir = tmp_path / "results"
    result = CliRunner().invoke(
        cli,
        [
            "bench", "--n", str(N), "--rate", "100", "--warmup", "1", "--duration", "2",
            "--latency-sink", "scored", "--ceiling-seconds", "2", "--scaleout-workers", "1,2",
            "--memory-accounts", str(ACCOUNTS), "--tx-per-account", "2",
            "--phases", "throughput,latency,memory,scaleout", "--faust-table",
            "--broker", broker.bootstrap, "--redis-url", redis_url,
            "--results-dir", str(out_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    files = list(out_dir.glob("*.json"))
    assert len(files) == 1
    r = json.loads(files[0].read_text())

    assert r["machine"]["cpus"] >= 1 and r["data"]["rows_loaded"] >= N
    assert r["broker"] == "external"  # a running broker's URL: not one the run started
    tp = r["throughput"]
    assert tp["n"] == N and tp["produce"]["transactions"] == N
    for name in ("bare_aiokafka", "bare_faust", "faust_table", "faust_hold", "worker"):
        assert tp[name]["events"] == N, name
        assert tp[name]["counted"] >= N, name
        # null when a phase on so few events ended within one poll (no measurable rate)
        rate = tp[name]["events_per_second"]
        assert rate is None or rate > 0, name
    assert tp["worker"]["rss_bytes"] > 0
    # (b3) held every event in a changelogged table (fewer than its window per partition:
    # none released), and its restart restored each one from that changelog
    hold = tp["faust_hold"]
    assert hold["value_bytes"] > 100
    assert hold["restart"]["changelog_records"] == N
    assert hold["restart"]["held_entries"] == N
    assert hold["restart"]["recovered_seconds"] > 0 and hold["restart"]["cpu_seconds"] > 0
    assert tp["bare_faust"]["restart"]["changelog_records"] is None
    assert tp["bare_faust"]["restart"]["recovered_seconds"] > 0
    assert {"c_over_a", "c_over_b", "c_over_b_per_cpu_second", "c_over_b_ceiling"} <= set(tp["ratios"])
    # (p): the worker's pipeline functions scored every transaction, at both batch sizes
    assert [run["batch"] for run in tp["pure_work"]["runs"]] == [500, 50]
    assert all(run["scored"] == N and run["us_per_transaction"] > 0 for run in tp["pure_work"]["runs"])
    # on a few hundred events b's rate says little: only the ceiling's range is checked
    assert 0 <= tp["ratios"]["c_over_b_ceiling"] < 1
    assert 0 <= tp["ratios"]["c_over_b_ceiling_per_cpu_second"] < 1
    assert tp["worker"]["cpu_seconds"] > 0 and tp["bare_faust"]["events_per_cpu_second"] > 0

    lat = r["latency"]
    assert lat["sent"] > 0 and lat["warmup_sent"] > 0 and lat["sink"] == "scored"
    assert lat["alerts_matched"] == lat["sent"] and lat["missing"] == 0
    assert lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"] <= lat["max_ms"]
    # the alerts among the measured transactions (the model's threshold: maybe none)
    assert 0 <= lat["alert"]["alerts"] <= lat["sent"]
    assert 0.0 <= lat["cpu"]["idle_share"] <= 1.0 and lat["cpu"]["worker_cpu_seconds"] > 0
    hist = lat["worker_histograms"]["fraud_processing_latency_seconds"]
    assert hist["count"] >= lat["sent"]
    hop = lat["ceiling"]
    assert hop["sent"] > 0 and hop["alerts_matched"] == hop["sent"] and hop["missing"] == 0
    faust_hop = lat["faust_ceiling"]  # two bare Faust agents forwarded every record
    assert faust_hop["sent"] > 0 and faust_hop["alerts_matched"] == faust_hop["sent"]
    assert faust_hop["missing"] == 0

    (mem,) = r["memory"]["runs"]
    assert mem["accounts"] == ACCOUNTS and mem["transactions"] == 2 * ACCOUNTS
    assert mem["throughput"]["counted"] >= 2 * ACCOUNTS
    assert mem["rss_after_bytes"] > 0 and "bytes_per_account" in mem
    # the probes' accounts are in the table too
    assert mem["state_gauges"]["fraud_table_accounts"] >= ACCOUNTS

    sc = r["scaleout"]
    one, two = sc["runs"]
    assert one["workers"] == 1 and one["events"] == N and len(one["per_worker"]) == 1
    assert two["workers"] == 2 and len(two["per_worker"]) == 2 and sum(two["per_worker"]) >= N
    assert one["cpu_seconds_per_1000"] > 0 and two["cpu_seconds_per_1000"] > 0
    assert set(sc["ratios"]) == {"2_vs_1"}
    assert sc["ratios"]["2_vs_1"]["cpu_seconds_per_1000"] > 0
    for phase in ("throughput", "latency", "memory", "scaleout"):
        assert "error" not in r[phase], r[phase]

    # the run deleted its Redis keys (alert ids)
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        assert not list(client.scan_iter(match=f"{r['tag']}:*"))
    finally:
        client.close()


def test_bench_starts_an_apache_kafka_of_its_own_and_names_it(redis_url, tmp_path):
    """``--broker kafka``: a one-node Apache Kafka of the run's own, started, measured
    on and stopped; the results say ``"broker": "kafka"``."""
    out_dir = tmp_path / "results"
    result = CliRunner().invoke(
        cli,
        [
            "bench", "--n", str(N), "--phases", "throughput", "--broker", "kafka",
            "--redis-url", redis_url, "--results-dir", str(out_dir),
        ],
    )
    assert result.exit_code == 0, result.output
    (file,) = out_dir.glob("*.json")
    r = json.loads(file.read_text())
    assert r["broker"] == "kafka"
    assert r["throughput"]["worker"]["events"] == N
    assert "error" not in r["throughput"], r["throughput"]
