#!/usr/bin/env bash
# The handbook split evaluated from what the STREAM wrote: replays the history
# the test window needs (37 days of terminal windows + delay) and the test window itself
# through a real worker with scored-transactions on, then runs `fraudctl evaluate` on the
# worker's scored-transactions and offline, both rules. Needs ../shared/data.
#   bench/stream_evaluate.sh            # ~420,000 transactions; minutes at the worker's rate
# It also prints the worker's alignment timeouts and a per-transaction comparison of the
# stream's scores with the offline ones (bench/stream_vs_offline.py).
# Env: PORT (broker, default 19592), WEB_PORT (16566, then +1 per worker), WORKERS (1),
# DATA (the handbook file).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${PORT:-19592}
WEB=${WEB_PORT:-16566}
WORKERS=${WORKERS:-1}
DATA=${DATA:-../shared/data/handbook-transactions-2018-04-01_2018-07-31.csv.gz}
TAG=streameval-$(date +%s)
export KAFKA_BROKER_URL=kafka://127.0.0.1:$PORT APP_ID=$TAG WEB_PORT=$WEB PUBLISH_SCORED=true \
  TRANSACTIONS_TOPIC=$TAG-transactions LABELS_TOPIC=$TAG-labels SCORED_TOPIC=$TAG-scored \
  ALERTS_TOPIC=$TAG-alerts DEAD_LETTER_TOPIC=$TAG-dead-letter REDIS_KEY_PREFIX=$TAG: \
  RUN_DIR=.run/$TAG
$BIN/fraudctl stack up
PIDS=()
for i in $(seq 0 $((WORKERS - 1))); do
  WEB_PORT=$((WEB + i)) $BIN/python -m app worker -l info > .run/$TAG-worker-$i.log 2>&1 &
  PIDS+=($!)
done
trap 'kill ${PIDS[*]} 2>/dev/null || true; wait 2>/dev/null || true; $BIN/fraudctl stack down' EXIT
for i in $(seq 0 $((WORKERS - 1))); do
  until curl -sf 127.0.0.1:$((WEB + i))/metrics >/dev/null; do
    kill -0 ${PIDS[$i]} || { echo "worker $i exited, see .run/$TAG-worker-$i.log"; exit 1; }; sleep 1
  done
done
START=$(date +%s)
$BIN/fraudctl replay "$DATA" --start 2018-06-11 --end 2018-07-24
N=$($BIN/python -c "
from datetime import date
from app.data.handbook import read_handbook
print(len(read_handbook('$DATA', date(2018,6,11), date(2018,7,24))))")
scored() {
  for i in $(seq 0 $((WORKERS - 1))); do curl -s 127.0.0.1:$((WEB + i))/metrics; done |
    awk '/^fraud_transactions_scored_total/ {s+=$2} END {print int(s)}'
}
while [ "$(scored)" -lt "$N" ]; do sleep 5; done
echo "stream: $N transactions scored in $(( $(date +%s) - START )) s"
for i in $(seq 0 $((WORKERS - 1))); do
  curl -s 127.0.0.1:$((WEB + i))/metrics | grep -E '^fraud_(alignment_timeouts_total|late_transactions_total|duplicate_transactions_total) '
done
echo "== per transaction: stream vs offline (test window)"
$BIN/python bench/stream_vs_offline.py "$DATA" || true
for rule in before-test handbook-daily; do
  echo "== rule $rule: from the stream's $SCORED_TOPIC"
  $BIN/fraudctl evaluate "$DATA" --known-compromised $rule --from-topic "$SCORED_TOPIC"
  echo "== rule $rule: offline"
  $BIN/fraudctl evaluate "$DATA" --known-compromised $rule
done
