#!/usr/bin/env bash
# Run a study on an offline GPU host in slices, from a bundle prepared where the network is.
#
#   scripts/offline_gpu_study.sh pack STUDY BUNDLE_DIR
#       (networked side, after `snakemake --config study=STUDY --until tokenize export_tasks`)
#       BUNDLE_DIR/data.tar.xz: the study's data config, tokenizer, token shards and task files. tar keeps
#       their modification times, so Snakemake sees the data stages as done; the raw corpus stays behind
#       (only its small corpus.json travels).
#   scripts/offline_gpu_study.sh run STUDY BUNDLE_DIR WHEEL_DIR RECORDS_TAR TIME_LIMIT_S [GPU_JOBS]
#       (GPU side, from the repository root) installs WHEEL_DIR/*.whl into /tmp/site (no index, no deps),
#       unpacks the data, runs `snakemake --until record` for at most TIME_LIMIT_S seconds with GPU_JOBS
#       GPU jobs at a time (default 1), and writes the small run files (records, metrics, logs, Snakemake's
#       benchmark files; never checkpoints or weights) to RECORDS_TAR. Extra Snakemake arguments come from
#       ROM_SNAKEMAKE_ARGS (e.g. "--prioritize results/STUDY/runs/RUN_ID/final.json ..." to train some runs
#       first). Unpack RECORDS_TAR into results/STUDY/ of the clone you carry (tar -C results/STUDY -xzf
#       RECORDS_TAR) before the next slice: a slice trains every run whose record did not travel with it. Finished runs are then kept, and an interrupted one
#       resumes from its checkpoint if the host kept it.
#
# Modification times do not survive every copy, so `run` re-stamps the run files that came with the
# working tree in pipeline order (config < train < eval/flops/downstream < final) and tells Snakemake to
# judge by modification times only (--rerun-triggers mtime): a finished run is never trained twice.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }
[[ $# -ge 1 ]] || usage 2

pack() {
    local study=$1 bundle=$2 data="results/$1/data"
    for f in config.yaml corpus/corpus.json tokenizer.json tokens/train.bin tokens/val.bin tasks/manifest.json; do
        [[ -e "$data/$f" ]] || { echo "pack: $data/$f is missing; run the data stages first" >&2; exit 1; }
    done
    mkdir -p "$bundle"
    tar -C "results/$study" -cf - data/config.yaml data/corpus/corpus.json data/tokenizer.json data/tokens data/tasks \
        | xz -9 -T0 > "$bundle/data.tar.xz.tmp"
    mv "$bundle/data.tar.xz.tmp" "$bundle/data.tar.xz"
    ls -l "$bundle/data.tar.xz"
}

restamp_runs() {  # pipeline order of modification times for run files that arrived without theirs
    local study=$1 t newest_data now
    # just after the newest data file (the run files' inputs), and never in the future
    newest_data=$(find "results/$study/data" -type f -printf '%T@\n' | sort -n | tail -1 | cut -d. -f1)
    now=$(date +%s)
    t=$(( ${newest_data:-0} + 10 ))
    (( t + 3 <= now )) || t=$(( now - 3 ))
    for run in "results/$study"/runs/*/; do
        [[ -e "$run/config.yaml" ]] || continue
        touch -d "@$t" "$run/config.yaml"
        [[ -e "$run/train.json" ]] && touch -d "@$(( t + 1 ))" "$run/train.json"
        for part in eval flops downstream; do
            [[ -e "$run/$part.json" ]] && touch -d "@$(( t + 2 ))" "$run/$part.json"
        done
        [[ -e "$run/final.json" ]] && touch -d "@$(( t + 3 ))" "$run/final.json"
    done
    return 0
}

run() {
    local study=$1 bundle=$2 wheels=$3 records=$4 limit=$5 gpu_jobs=${6:-1} rc=0
    if compgen -G "$wheels/*.whl" > /dev/null; then  # an empty WHEEL_DIR: the host has every package already
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$wheels"/*.whl
    fi
    export PYTHONPATH="/tmp/site:$PWD" PATH="/tmp/site/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    if [[ ! -e "results/$study/data/tokens/train.bin" ]]; then
        python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='fully_trusted')" \
            "$bundle/data.tar.xz" "results/$study"
    fi
    restamp_runs "$study"
    # the ILP scheduler needs PuLP (16 MB, not carried); the greedy one is enough for a handful of GPU jobs
    timeout --signal=TERM --kill-after=90 "$limit" \
        python3 -m snakemake --cores "$(nproc)" --resources gpu="$gpu_jobs" --config study="$study" \
        --rerun-triggers mtime --scheduler greedy --keep-going --until record ${ROM_SNAKEMAKE_ARGS:-} || rc=$?
    tar -C "results/$study" -czf "$records" --exclude='checkpoint*' --exclude='*.pt' --exclude='data' .
    echo "snakemake exit status: $rc (124: stopped at the ${limit}s limit; rerun to continue)"
}

case "$1" in
    pack) [[ $# -eq 3 ]] || usage 2; pack "$2" "$3" ;;
    run) [[ $# -ge 6 && $# -le 7 ]] || usage 2; run "${@:2}" ;;
    -h|--help) usage 0 ;;
    *) echo "unknown command: $1" >&2; usage 2 ;;
esac
