#!/usr/bin/env bash
# Regenerate one committed report from its spec: run (resumable), analyse, report, copy.
#
#   reports/regenerate.sh NAME [WORKERS]     # e.g. reports/regenerate.sh oracle_vs_random 2
#
# Runs analyses/NAME.toml into runs/NAME (kept out of git; rerunning skips done runs, so an
# interrupted regeneration resumes), analyses it with analyses/NAME.analysis.toml when that
# file exists, writes the report and copies what is committed into reports/NAME/:
# report.md, analysis.json, comparisons.csv, runs.csv, design.json, tables.tex and the PNG
# figures (the HTML report and the PDF figures stay in runs/NAME), then rewrites the index
# reports/README.md (`causalloc index reports`). Run from anywhere; paths
# are relative to the repository root so the report records no machine path.
set -euo pipefail
if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: reports/regenerate.sh NAME [WORKERS]  (NAME: a spec analyses/NAME.toml)" >&2
    exit 2
fi
name=$1
workers=${2:-2}
cd "$(dirname "$0")/.."
if [[ ! -f analyses/$name.toml ]]; then
    echo "reports/regenerate.sh: analyses/$name.toml does not exist" >&2
    exit 2
fi
causalloc run "analyses/$name.toml" --out "runs/$name" --workers "$workers" --save-masks
analysis_spec=()
if [[ -f analyses/$name.analysis.toml ]]; then
    analysis_spec=(--spec "analyses/$name.analysis.toml")
fi
causalloc analyze "runs/$name" --out "runs/$name" "${analysis_spec[@]}"
causalloc report "runs/$name"
mkdir -p "reports/$name/figures"
cp "runs/$name"/{report.md,analysis.json,comparisons.csv,runs.csv,design.json,tables.tex} "reports/$name/"
rm -f "reports/$name"/figures/*.png
cp "runs/$name"/figures/*.png "reports/$name/figures/"
causalloc index reports   # reports/README.md: the index reads every report's analysis
echo "reports/$name regenerated from analyses/$name.toml; reports/README.md rewritten"
