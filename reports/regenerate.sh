#!/usr/bin/env bash
# Regenerate one committed report.
#
#   reports/regenerate.sh NAME                       # re-analyse and re-render from the committed runs
#   reports/regenerate.sh --rerun NAME [WORKERS]     # rerun the runs first (only when run code changed)
#
# Default: the committed reports/NAME/runs.csv, design.json and masks/ (when committed) are
# copied into runs/NAME (kept out of git), analysed there with analyses/NAME.analysis.toml when
# that file exists, reported, and report.md, analysis.json, comparisons.csv, tables.tex and the
# PNG figures are copied back, and the index reports/README.md is rewritten (`causalloc index
# reports`). No run is repeated: training is chaotic, so runs on another
# processor, or on a rebuilt testbed, are another instance (docs/testbeds.md).
#
# --rerun: runs analyses/NAME.toml into runs/NAME first (resumable; --save-masks), then
# analyses, reports and copies runs.csv, design.json and masks/ too. Only for a spec whose
# [testbed] names a pinned testbed file (the same weights everywhere); a spec that builds its
# testbed needs --new-instance as well, and its README must then say the numbers changed.
# Paths are relative to the repository root so the report records no machine path.
set -euo pipefail
usage="usage: reports/regenerate.sh [--rerun [--new-instance]] NAME [WORKERS]"
rerun=0
new_instance=0
while [[ $# -gt 0 && $1 == --* ]]; do
    case $1 in
        --rerun) rerun=1 ;;
        --new-instance) new_instance=1 ;;
        *) echo "$usage" >&2; exit 2 ;;
    esac
    shift
done
if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "$usage" >&2
    exit 2
fi
name=$1
workers=${2:-2}
cd "$(dirname "$0")/.."
report=reports/$name
out=runs/$name
if [[ $rerun == 1 ]]; then
    if [[ ! -f analyses/$name.toml ]]; then
        echo "reports/regenerate.sh: analyses/$name.toml does not exist" >&2
        exit 2
    fi
    if ! grep -qE '^[[:space:]]*file[[:space:]]*=' "analyses/$name.toml" && [[ $new_instance == 0 ]]; then
        echo "reports/regenerate.sh: analyses/$name.toml names no pinned testbed ([testbed] file):" \
             "a rerun builds another instance of the testbed; add --new-instance to do it anyway" >&2
        exit 2
    fi
    causalloc run "analyses/$name.toml" --out "$out" --workers "$workers" --save-masks
else
    if [[ ! -f $report/runs.csv || ! -f $report/design.json ]]; then
        echo "reports/regenerate.sh: $report has no committed runs.csv and design.json" >&2
        exit 2
    fi
    rm -rf "$out"
    mkdir -p "$out"
    cp "$report"/{runs.csv,design.json} "$out/"
    if [[ -d $report/masks ]]; then
        cp -r "$report/masks" "$out/masks"
    fi
fi
analysis_spec=()
if [[ -f analyses/$name.analysis.toml ]]; then
    analysis_spec=(--spec "analyses/$name.analysis.toml")
fi
causalloc analyze "$out" --out "$out" "${analysis_spec[@]}"
causalloc report "$out"
mkdir -p "$report/figures"
cp "$out"/{report.md,analysis.json,comparisons.csv,tables.tex} "$report/"
if [[ -f $out/selected_runs.csv ]]; then cp "$out/selected_runs.csv" "$report/"; fi
if [[ $rerun == 1 ]]; then
    cp "$out"/{runs.csv,design.json} "$report/"
    if [[ -d $out/masks ]]; then
        rm -rf "$report/masks"
        cp -r "$out/masks" "$report/masks"
    fi
fi
rm -f "$report"/figures/*.png
cp "$out"/figures/*.png "$report/figures/"
causalloc index reports   # reports/README.md: the index reads every report's analysis
echo "$report regenerated ($([[ $rerun == 1 ]] && echo "runs rerun from analyses/$name.toml" || echo "re-analysed from its committed runs"))"
