#!/usr/bin/env bash
# All latency benchmarks (issue 4 and issue 2's grid table) under ONE hold of the machine's
# exclusive lock, so that no other benchmark shares the 2 vCPUs while they time. Resumable.
# Phases run most-needed first; none starts after DEADLINE (UTC HH:MM, required) and a running one
# is stopped there (its finished chunks stay in the records), then the report is written.
# PHASES (default "grid peak single-ort repeat-ort shapes single-torch repeat-torch") picks phases.
set -uo pipefail
cd "$(dirname "$0")/.."
LOCK=/tmp/dynasearch-cpu.lock
if [ -z "${DYNASEARCH_LOCK_HELD:-}" ]; then
  exec env DYNASEARCH_LOCK_HELD=1 flock "$LOCK" "$0" "$@"
fi
PY=.venv/bin/python
END=$(date -u -d "${DEADLINE:?set DEADLINE=HH:MM (UTC): no phase starts after it}" +%s)
left() { echo $(( END - $(date -u +%s) )); }
for phase in ${PHASES:-grid peak single-ort repeat-ort shapes single-torch repeat-torch}; do
  if [ "$(left)" -le 0 ]; then echo "== skip $phase (deadline)"; continue; fi
  echo "== $phase $(date -u +%H:%M:%S)"
  if [ "$phase" = grid ]; then script=bench/grid_latency.py; args=(); else script=bench/latency_measure.py; args=("$phase"); fi
  timeout "$(left)" "$PY" "$script" "${args[@]}" || echo "== $phase stopped (rc $?)"
done
echo "== report $(date -u +%H:%M:%S)"
"$PY" bench/latency_report.py
echo "== done $(date -u +%H:%M:%S)"
