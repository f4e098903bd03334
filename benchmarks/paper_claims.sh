#!/usr/bin/env bash
# The three CPU-sized bench sets that measure the GWAE paper's claim (one GW
# objective for a disentanglement and a clustering meta-prior) and the Sinkhorn AE
# paper's claim (one objective across latent geometries). Each set trains into
# runs/bench/<set> (an interrupted set resumes: run the script again) and its tables
# and figures are copied into benchmarks/results/<set>/. About 30-40 minutes for the
# three on 2 idle CPU cores (estimates per set in each YAML's header); pass set names
# to run some of them, e.g. `benchmarks/paper_claims.sh mnist-clustering`.
# EPOCHS=N trains every run of the sets N epochs instead of the set's protocol, into
# runs/bench/<set>-<N>ep and benchmarks/results/<set>-<N>ep (e.g. `EPOCHS=10
# benchmarks/paper_claims.sh shapes-disentanglement`: about 55 minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${OTAE:-}" ]; then
  if [ -x .venv/bin/otae ]; then OTAE=.venv/bin/otae; else OTAE=".venv/bin/python -m otae"; fi
fi
SETS=("$@")
[ ${#SETS[@]} -gt 0 ] || SETS=(shapes-disentanglement mnist-clustering mnist-sae-geometry)

SUFFIX="" EXTRA=()
if [ -n "${EPOCHS:-}" ]; then SUFFIX="-${EPOCHS}ep" EXTRA=("training.epochs=$EPOCHS"); fi

for set in "${SETS[@]}"; do
  out=runs/bench/$set$SUFFIX
  results=benchmarks/results/$set$SUFFIX
  $OTAE bench "$set" "${EXTRA[@]}" --out "$out"
  mkdir -p "$results"
  # the tables, the per-run rows and the side-by-side figures (no run directories)
  for file in table.md table.csv runtime.md runs.csv throughput.csv report.html; do
    if [ -f "$out/$file" ]; then cp "$out/$file" "$results/"; fi
  done
  cp "$out"/*.png "$results/" 2>/dev/null || true
done
