#!/usr/bin/env bash
# Relational co-training beyond pix + fou: the six Table 4 methods (five for three views:
# CCA is defined for two) on five view sets of the embedded UCI Handwritten data, in three
# regimes (raw views at latent 2, standardised at latent 2, standardised at latent 20),
# 5 seeds each, one thread per run. A killed run resumes where it stopped: every finished
# cell is in its folder's cells.jsonl. Then benchmarks/multiview_view_sets.py gathers the
# tables into benchmarks/results/multiview/view-sets/summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OTAE=${OTAE:-.venv/bin/otae}
PY=${PY:-.venv/bin/python}
R=benchmarks/results/multiview/view-sets
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
for views in kar,pix fou,kar fac,zer mor,zer fou,kar,pix; do
  tag=${views//,/-}
  $OTAE multiview --views "$views" --methods all --seeds 5 --preprocess none --latent-dim 2 \
      --out "$R/$tag/none-latent2"
  $OTAE multiview --views "$views" --methods all --seeds 5 --latent-dim 2 \
      --out "$R/$tag/standardise-latent2"
  $OTAE multiview --views "$views" --methods all --seeds 5 \
      --out "$R/$tag/standardise-latent20"
done
$PY benchmarks/multiview_view_sets.py "$R"
