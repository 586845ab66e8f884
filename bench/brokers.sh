#!/usr/bin/env bash
# The worker on both brokers: for Tansu and for Apache Kafka (one node, KRaft), each
# started by the run itself, the throughput phases (a, b, b2, c and the pure work p) on
# N transactions, then steady-state latency to `scored-transactions` at each rate of
# RATES, each with its two floors (two bare aiokafka hops, two bare Faust agents)
# measured in the same command. One result file per command under bench/results/,
# each naming its broker ("broker") and rate; docs/performance.md gives both columns.
#   bench/brokers.sh                       # about 30 minutes on 2 cores
# Env: BROKERS (tansu kafka), RATES (200 500 1000), N (50000), DURATION (60, measured s
# per rate), WARMUP (15), CEILING (20, measured s per floor).
set -euo pipefail
cd "$(dirname "$0")/.."
BROKERS=${BROKERS:-tansu kafka}
RATES=${RATES:-200 500 1000}
N=${N:-50000}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-15}
CEILING=${CEILING:-20}
for broker in $BROKERS; do
  .venv/bin/fraudctl bench --broker "$broker" --phases throughput --faust-table --n "$N"
  for rate in $RATES; do
    .venv/bin/fraudctl bench --broker "$broker" --phases latency --rate "$rate" \
      --duration "$DURATION" --warmup "$WARMUP" --ceiling-seconds "$CEILING" \
      --latency-sink scored
  done
done
