#!/usr/bin/env bash
# CI smoke run of the benchmark harness: quick mode, roomcast (WebSocket) and the naive
# `websockets` loop only, under 60 s. Uses the active Python (CI's project venv) and adds
# the load generator's packages to it. Fails only when the harness breaks, never on timing.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}" bash bench/setup.sh --quick
exec "${PYTHON:-python3}" bench/run.py --quick --out "${BENCH_OUT:-bench/results/ci-quick.json.tmp}"
