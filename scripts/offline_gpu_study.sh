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
#       GPU jobs at a time (default 1; "auto": as many as the first GPU's free memory holds at ROM_GPU_JOB_GIB,
#       default 17 GiB, per job, 1 to 8: 4 on an idle 80 GB H100, 8 on an idle 141 GB H200), and writes the small run
#       files (records, metrics, logs, Snakemake's benchmark files; never checkpoints or weights) to
#       RECORDS_TAR. Extra Snakemake arguments come from ROM_SNAKEMAKE_ARGS (e.g. "--prioritize results/STUDY/runs/RUN_ID/final.json ..." to train some runs
#       first). Unpack RECORDS_TAR into results/STUDY/ of the clone you carry (tar -C results/STUDY -xzf
#       RECORDS_TAR) before the next slice: a slice trains every run whose record did not travel with it. Finished runs are then kept, and an interrupted one
#       resumes from its checkpoint if the host kept it.
#       Triton's autotuning results (scripts/triton_autotune_cache.py) carried in ROM_AUTOTUNE_CARRY (default
#       .triton-autotune, git-ignored) go into Triton's cache dir first, so kernels tuned in an earlier lease
#       are not tuned again.
#   scripts/offline_gpu_study.sh start STUDY BUNDLE_DIR WHEEL_DIR TIME_LIMIT_S [GPU_JOBS]
#       (GPU side) the same as `run`, in the background, on a snapshot of this tree: installs the wheels now
#       (so several studies started one after another never install at the same time), copies the tree to
#       $ROM_SITTING_DIR/STUDY (default /tmp/rom-sitting; .git and the carried .gpu* folders stay behind), and
#       starts `run` there under setsid, so it outlives the command that started it, and a later command that
#       re-sends the working tree does not change the files it is running. Log: $ROM_SITTING_DIR/STUDY.log;
#       records at the end: $ROM_SITTING_DIR/STUDY.records.tar.gz. Several studies can share one GPU this way.
#       Refuses while that study's background run is still going (it would delete the files in use).
#   scripts/offline_gpu_study.sh collect STUDY OUT_TAR
#       (GPU side, any time) the small run files of a started study so far (finished runs and the metrics
#       and logs of unfinished ones; Snakemake's per-job logs, where failed jobs leave their error, and the
#       sitting's own log as sitting.log; no checkpoints, weights or data) into OUT_TAR, and a progress table:
#       each run finished, trained (waiting for eval/flops), at step N, or not started, and whether the
#       background run is still going. Copy OUT_TAR back after every call: a host that is taken back
#       mid-sitting keeps nothing. Triton's autotune records go beside it, to OUT_TAR's folder/triton-autotune;
#       merge them into .triton-autotune (`python scripts/triton_autotune_cache.py save --cache-dir THAT --to
#       .triton-autotune`) and carry it.
#   scripts/offline_gpu_study.sh unscored STUDY OUT_DIR
#       (GPU side, any time; typically in a lease's last command) for every run of a started study that has
#       finished training but has no record yet: its weights and training parts (model.safetensors, train.json,
#       config.yaml, metrics.jsonl, and flops.json and train.log where present) as OUT_DIR/RUN.tgz.partaa, ...,
#       split at ROM_PART_BYTES (default 14M: a lent device returns files of at most 16 MiB). Where the network
#       and the data are: `cat RUN.tgz.part* | tar -C results/STUDY/runs/RUN -xzf -`, then score the run there
#       with the pipeline's own commands, `python -m rom eval --run R --data DATA --out R/eval.json` and
#       `python -m rom record --run R --require eval,flops --out R/final.json` (the record says where it was
#       scored: eval.device), and leave model.safetensors out of what you commit.
#   scripts/offline_gpu_study.sh gpu-jobs [GPU_JOBS]
#       (GPU side) prints the number of GPU jobs that `run`, `start` and `resume` would use (default auto).
#   scripts/offline_gpu_study.sh wait STUDY SECONDS [FINISHED]
#       (GPU side) returns when the started study's background run has ended, when FINISHED of its runs have a
#       record (final.json; committed ones count), or after SECONDS, printing the count every 30 s; then
#       `collect`. Lets one device command start, wait and collect without guessing the sleep.
#   scripts/offline_gpu_study.sh stop STUDY
#       (GPU side) ends a started study's background run with everything it started (its training and
#       evaluation processes too, which hold GPU memory): TERM to its whole session, KILL after 30 s. Works
#       from a later device command that cannot see those processes (each may run in a process namespace of
#       its own): the run's heartbeat reads the request from a file and ends its own session. `wait`,
#       `collect`, `start` and `resume` likewise tell whether the run is alive from its heartbeat file.
#   scripts/offline_gpu_study.sh resume STUDY TIME_LIMIT_S [GPU_JOBS]
#       (GPU side) runs a started study again in its own snapshot, so checkpoints and trained models are
#       kept (an interrupted run resumes, a trained one is only evaluated), after releasing the Snakemake
#       lock that a killed run leaves. Refuses while the study's background run is still going.
#
# Modification times do not survive every copy, so `run` re-stamps the run files that came with the
# working tree in pipeline order (config < train < eval/flops/downstream < final) and tells Snakemake to
# judge by modification times only (--rerun-triggers mtime): a finished run is never trained twice.
set -euo pipefail

usage() { sed -n '2,/^set -euo pipefail$/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }  # the header
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
    # Snakemake counts a rule's benchmark file and log among its outputs, and judges the rule by the oldest of them:
    # a Snakemake benchmark file left older than config.yaml re-trains a recorded run (sitting 9 of the miniature
    # study re-trained 34 runs this way), so each part's benchmark and log take its time too
    local run id part
    for run in "results/$study"/runs/*/; do
        [[ -e "$run/config.yaml" ]] || continue
        id=$(basename "$run")
        stamp_rule "$study" "$id" run_config "$t" config.yaml
        stamp_rule "$study" "$id" train $(( t + 1 )) train.json
        for part in eval flops downstream; do
            stamp_rule "$study" "$id" "$part" $(( t + 2 )) "$part.json"
        done
        stamp_rule "$study" "$id" record $(( t + 3 )) final.json
    done
    return 0
}

stamp_rule() {  # one run's output of a rule (run_config, train, eval, ...), with its Snakemake benchmark file and
    # log, at one time; nothing where the run has no such output
    local study=$1 id=$2 rule=$3 time=$4 output=$5 f
    [[ -e "results/$study/runs/$id/$output" ]] || return 0
    for f in "results/$study/runs/$id/$output" "results/$study/benchmarks/$rule/$id.tsv" \
             "results/$study/logs/$rule/$id.log"; do
        [[ -e "$f" ]] && touch -d "@$time" "$f"
    done
    return 0
}

install_wheels() {  # WHEEL_DIR/*.whl into /tmp/site; an empty WHEEL_DIR: the host has every package already
    local wheels=$1
    if compgen -G "$wheels/*.whl" > /dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$wheels"/*.whl
    fi
}

gpu_jobs_for() {  # GPU_JOBS as given, or for "auto" the jobs the first GPU's free memory holds (see the usage)
    local jobs=$1 mib total per_job_mib
    if [[ "$jobs" != auto ]]; then
        [[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "GPU_JOBS must be a whole number >= 1 or auto, got '$jobs'" >&2; return 1; }
        echo "$jobs"; return 0
    fi
    # every training or evaluation process of these studies holds 13-16 GiB whatever the model's size (seen
    # on an H100: 6 jobs ran out of memory, 4 did not). Count the memory still free, not the card's total: a
    # study started beside another study, or beside GPU tests, must not plan for memory those already hold
    # (sitting 8 of the mamba2 study ran 4 jobs beside 4 parity-test workers of 2-17 GiB each: 5 of its
    # training jobs died of CUDA out-of-memory).
    per_job_mib=$(( ${ROM_GPU_JOB_GIB:-17} * 1024 ))
    # one query, "free, total" of the first GPU
    IFS=, read -r mib total < <( (nvidia-smi --query-gpu=memory.free,memory.total --format=csv,noheader,nounits \
        2>/dev/null || true) | head -n 1 | tr -d ' ') || true  # no line: EOF, judged just below
    [[ "$mib" =~ ^[0-9]+$ ]] || { echo "GPU_JOBS auto: nvidia-smi gave no GPU memory ('$mib')" >&2; return 1; }
    if [[ "$total" =~ ^[0-9]+$ ]] && (( total - mib > per_job_mib / 2 )); then
        echo "GPU_JOBS auto: $mib of $total MiB free (other processes hold the rest)" >&2
    fi
    jobs=$(( mib / per_job_mib ))
    (( jobs > 8 )) && jobs=8
    (( jobs < 1 )) && jobs=1
    echo "$jobs"
}

offline_env() {  # the wheels installed into /tmp/site and this tree importable; no hub lookups
    export PYTHONPATH="/tmp/site:$PWD" PATH="/tmp/site/bin:$PATH" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
    # Triton keeps autotuning results on disk, so only the first of a sitting's processes tunes each kernel
    # shape (fla's kernels spent about 230 s of one 450 s mamba2 run tuning)
    export TRITON_CACHE_AUTOTUNING="${TRITON_CACHE_AUTOTUNING:-1}"
}

carry_autotune() {  # save|restore FOLDER: Triton's autotune records to/from FOLDER (scripts/triton_autotune_cache.py)
    local tool="" f
    # beside this script when run from the tree; in the snapshot's scripts/ when `start` runs a copy of it
    for f in "$(dirname "${BASH_SOURCE[0]}")/triton_autotune_cache.py" scripts/triton_autotune_cache.py; do
        [[ -f "$f" ]] && { tool=$f; break; }
    done
    if [[ -z "$tool" ]]; then
        echo "triton autotune $1: scripts/triton_autotune_cache.py not found; skipped" >&2
        return 0
    fi
    local flag=--from; [[ "$1" == save ]] && flag=--to
    # a speed-up only: a sitting goes on without it
    python3 "$tool" "$1" "$flag" "$2" || echo "triton autotune $1 failed; the sitting goes on without it" >&2
}

run() {
    local study=$1 bundle=$2 wheels=$3 records=$4 limit=$5 gpu_jobs rc=0
    gpu_jobs=$(gpu_jobs_for "${6:-1}")
    echo "GPU jobs: $gpu_jobs"
    install_wheels "$wheels"
    offline_env
    carry_autotune restore "${ROM_AUTOTUNE_CARRY:-.triton-autotune}"
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

sitting_dir() { echo "${ROM_SITTING_DIR:-/tmp/rom-sitting}"; }

start() {
    local study=$1 bundle wheels limit=$4 gpu_jobs sit dst
    gpu_jobs=$(gpu_jobs_for "${5:-1}")
    bundle=$(realpath "$2") wheels=$(realpath "$3") sit=$(sitting_dir)
    [[ -e "$bundle/data.tar.xz" ]] || { echo "start: $bundle/data.tar.xz is missing" >&2; exit 1; }
    if is_running "$study"; then
        echo "start: $study's background run is still going (pid $(cat "$sit/$study.pid")); stop it first" >&2
        exit 1
    fi
    install_wheels "$wheels"
    dst="$sit/$study"
    mkdir -p "$sit/no-wheels"
    rm -rf "$dst" && mkdir -p "$dst"
    tar -C . --exclude=./.git --exclude='./.gpu*' --exclude=./.snakemake -cf - . | tar -C "$dst" -xf -
    # the background runs its own copy of this script: bash reads a script as it goes, so a re-sent tree
    # must not change the file under it
    cp "${BASH_SOURCE[0]}" "$sit/$study.offline_gpu_study.sh"
    echo "$bundle" > "$sit/$study.bundle"
    : > "$sit/$study.log"  # a fresh log; `resume` appends to it
    launch "$study" "$limit" "$gpu_jobs"
    echo "started $study in $dst (pid $(cat "$sit/$study.pid"), log $sit/$study.log)"
}

launch() {  # `background` in the study's snapshot under setsid (a session of its own, so `stop` can end all of it)
    local study=$1 limit=$2 gpu_jobs=$3 sit i
    sit=$(sitting_dir)
    rm -f "$sit/$study.pid" "$sit/$study.exit" "$sit/$study.stop" "$sit/$study.stopped"
    touch "$sit/$study.alive"
    # exec: no shell stays behind between this command and the run (one would hold this command's output open
    # until the run ends, and its pid is not the run's session)
    (cd "$sit/$study" && exec setsid nohup bash "$sit/$study.offline_gpu_study.sh" background "$study" "$limit" \
        "$gpu_jobs" >> "$sit/$study.log" 2>&1 < /dev/null) &
    for ((i = 0; i < 100; i++)); do [[ -s "$sit/$study.pid" ]] && return 0; sleep 0.1; done
    echo "launch: $study's background run wrote no pid file in 10 s; see $sit/$study.log" >&2
    exit 1
}

# Each device command may run in a process namespace of its own: a later command may not see the background
# run's processes, or may see another process under its pid. So the background run says itself whether it is
# alive: a heartbeat file touched every BEAT_S seconds, an exit marker when it ends; and `stop` asks it to end
# itself through a file.
BEAT_S=5 STALE_S=20

background() {  # what `launch` starts: `run`, with the heartbeat beside it and the exit marker after it
    local study=$1 limit=$2 gpu_jobs=$3 sit beat
    sit=$(sitting_dir)
    echo $$ > "$sit/$study.pid.tmp" && mv "$sit/$study.pid.tmp" "$sit/$study.pid"  # the session's id (setsid)
    heartbeat "$sit/$study" &
    beat=$!
    # asked to stop, the heartbeat goes on to KILL what ignored the TERM; otherwise it ends with the run
    # (expanded now: the trap runs after this function's locals are gone)
    trap "rc=\$?; [[ -e '$sit/$study.stop' ]] || kill $beat 2>/dev/null; echo \$rc > '$sit/$study.exit'" EXIT
    trap 'exit 143' TERM
    run "$study" "$(cat "$sit/$study.bundle")" "$sit/no-wheels" "$sit/$study.records.tar.gz" "$limit" "$gpu_jobs"
}

heartbeat() {  # touches BASE.alive until BASE.stop appears, then ends its whole session: TERM, then KILL once
    # the run has written its exit marker (or after 30 s)
    local base=$1 i
    while [[ ! -e "$base.stop" ]]; do touch "$base.alive"; sleep "$BEAT_S"; done
    trap '' TERM
    # the session, not the process group: `timeout` puts Snakemake in a process group of its own
    pkill -TERM -s 0 || true
    for ((i = 0; i < 30; i++)); do [[ -e "$base.exit" ]] && break; sleep 1; done
    touch "$base.stopped"
    pkill -KILL -s 0 || true
}

is_running() {  # the study's background run is alive (see BEAT_S); a run started before the heartbeat existed, or
    # faked by a test, by its pid (a process that exited but was not reaped, state Z, is not alive)
    local sit pid
    sit=$(sitting_dir)
    [[ -e "$sit/$1.exit" || -e "$sit/$1.stopped" ]] && return 1
    if [[ -e "$sit/$1.alive" ]]; then
        (( $(date +%s) - $(stat -c %Y "$sit/$1.alive") <= STALE_S ))
        return
    fi
    pid=$(cat "$sit/$1.pid" 2>/dev/null || true)
    [[ -n "$pid" ]] && [[ "$(ps -o stat= -p "$pid" 2>/dev/null || true)" =~ ^[^Z] ]]
}

session_alive() {  # some process of session $1 has not exited (zombies, state Z, have)
    ps -e -o sid=,stat= | awk -v s="$1" '$1 == s && $2 !~ /^Z/ { found = 1 } END { exit !found }'
}

own_session() {  # pid $1, seen from this command, leads study $2's background run (not another process under that pid)
    [[ "$(ps -ww -o args= -p "$1" 2>/dev/null || true)" == *"$2.offline_gpu_study.sh"* ]]
}

stop() {
    local study=$1 sit pid i visible=
    sit=$(sitting_dir)
    pid=$(cat "$sit/$study.pid" 2>/dev/null || true)
    [[ -n "$pid" ]] || { echo "stop: no started study $study under $sit" >&2; exit 1; }
    touch "$sit/$study.stop"  # heard by the run's heartbeat, whether or not this command can see its processes
    # seen from here: TERM to the whole session at once (setsid made the run a session leader; its session holds
    # Snakemake, which `timeout` put in a process group of its own, and every job it started)
    if own_session "$pid" "$study"; then visible=1; pkill -TERM -s "$pid" 2>/dev/null || true; fi
    for ((i = 0; i < 45; i++)); do
        is_running "$study" || { [[ -n "$visible" ]] && session_alive "$pid"; } || break
        sleep 1
    done
    if [[ -n "$visible" ]] && session_alive "$pid"; then pkill -KILL -s "$pid" 2>/dev/null || true; fi
    if is_running "$study"; then echo "stop: $study's background run is still alive after 45 s" >&2; exit 1; fi
    echo "stopped $study (session $pid)"
}

resume() {
    local study=$1 limit=$2 gpu_jobs sit
    gpu_jobs=$(gpu_jobs_for "${3:-1}")
    sit=$(sitting_dir)
    [[ -d "$sit/$study" && -e "$sit/$study.bundle" ]] || { echo "resume: no started study $study under $sit" >&2; exit 1; }
    if is_running "$study"; then
        echo "resume: $study's background run is still going (pid $(cat "$sit/$study.pid")); stop it first" >&2
        exit 1
    fi
    # a killed Snakemake leaves its lock; no other Snakemake runs in this snapshot (checked just above)
    (cd "$sit/$study" && offline_env && python3 -m snakemake --unlock --cores 1 --config study="$study" \
        > /dev/null 2>&1) \
        || echo "resume: snakemake --unlock failed in $sit/$study; going on" >&2
    echo "--- resumed $(date -u +%FT%TZ): limit ${limit}s, $gpu_jobs GPU jobs" >> "$sit/$study.log"
    launch "$study" "$limit" "$gpu_jobs"
    echo "resumed $study in $sit/$study (pid $(cat "$sit/$study.pid"), log $sit/$study.log)"
}

wait_for() {
    local study=$1 seconds=$2 want=${3:-} sit t0 n left
    sit=$(sitting_dir)
    [[ -d "$sit/$study" ]] || { echo "wait: no started study $study under $sit" >&2; exit 1; }
    [[ "$seconds" =~ ^[0-9]+$ ]] || { echo "wait: SECONDS must be a whole number, got '$seconds'" >&2; exit 2; }
    [[ -z "$want" || "$want" =~ ^[0-9]+$ ]] || { echo "wait: FINISHED must be a whole number, got '$want'" >&2; exit 2; }
    t0=$(date +%s)
    while :; do
        n=$( (find "$sit/$study/results/$study/runs" -name final.json 2>/dev/null || true) | wc -l)  # none yet: 0
        if ! is_running "$study"; then echo "wait: $study's background run has ended ($n records)"; return 0; fi
        if [[ -n "$want" ]] && (( n >= want )); then echo "wait: $n records (asked for $want)"; return 0; fi
        left=$(( seconds - ($(date +%s) - t0) ))
        if (( left <= 0 )); then echo "wait: ${seconds}s passed ($n records)"; return 0; fi
        echo "wait: $(( seconds - left ))s, $n records"
        sleep "$(( left < 30 ? left : 30 ))"
    done
}

collect() {
    local study=$1 out=$2 sit runs run name state
    sit=$(sitting_dir)
    runs="$sit/$study/results/$study/runs"
    [[ -d "$sit/$study" ]] || { echo "collect: no started study $study under $sit" >&2; exit 1; }
    state=ended
    if is_running "$study"; then state=running; fi
    echo "$study: background run $state; log $sit/$study.log"
    if [[ -d "$runs" ]]; then
        for run in "$runs"/*/; do
            name=$(basename "$run")
            if [[ -e "$run/final.json" ]]; then echo "  $name: finished"
            elif [[ -e "$run/train.json" ]]; then echo "  $name: trained, not yet evaluated"
            elif [[ -s "$run/metrics.jsonl" ]]; then
                echo "  $name: at step $(tail -n 1 "$run/metrics.jsonl" | grep -o '"step": *[0-9]*' | grep -o '[0-9]*$' || echo '?')"
            else echo "  $name: not started"; fi
        done
    fi
    local parts=()
    for part in runs benchmarks logs; do [[ -d "$sit/$study/results/$study/$part" ]] && parts+=("$part"); done
    ((${#parts[@]})) || { echo "collect: nothing to collect yet" >&2; exit 1; }
    [[ -e "$sit/$study.log" ]] && cp "$sit/$study.log" "$sit/$study/results/$study/sitting.log" && parts+=(sitting.log)
    tar -C "$sit/$study/results/$study" -czf "$out.tmp" --exclude='checkpoint*' --exclude='*.pt' \
        --exclude='*.safetensors' "${parts[@]}"
    mv "$out.tmp" "$out"
    echo "collected $(tar -tzf "$out" | grep -c 'final.json$' || true) finished runs into $out"
    carry_autotune save "$(dirname "$out")/triton-autotune"
}

unscored() {
    local study=$1 out=$2 sit runs run name n=0 files f
    sit=$(sitting_dir)
    runs="$sit/$study/results/$study/runs"
    [[ -d "$sit/$study" ]] || { echo "unscored: no started study $study under $sit" >&2; exit 1; }
    mkdir -p "$out"
    for run in "$runs"/*/; do
        [[ -e "$run/train.json" && ! -e "$run/final.json" ]] || continue
        name=$(basename "$run")
        if [[ ! -e "$run/model.safetensors" ]]; then
            echo "  $name: trained, but its model.safetensors is gone; nothing to send" >&2
            continue
        fi
        files=(model.safetensors train.json config.yaml metrics.jsonl)
        for f in flops.json train.log; do [[ -e "$run/$f" ]] && files+=("$f"); done
        tar -C "$run" -czf "$out/$name.tgz.tmp" "${files[@]}"
        rm -f "$out/$name.tgz.part"*
        split -b "${ROM_PART_BYTES:-14M}" "$out/$name.tgz.tmp" "$out/$name.tgz.part"
        rm "$out/$name.tgz.tmp"
        echo "  $name: $(find "$out" -maxdepth 1 -name "$name.tgz.part*" | wc -l) part(s) in $out"
        n=$((n + 1))
    done
    echo "unscored: $n trained run(s) of $study without a record"
}

case "$1" in
    pack) [[ $# -eq 3 ]] || usage 2; pack "$2" "$3" ;;
    run) [[ $# -ge 6 && $# -le 7 ]] || usage 2; run "${@:2}" ;;
    start) [[ $# -ge 5 && $# -le 6 ]] || usage 2; start "${@:2}" ;;
    collect) [[ $# -eq 3 ]] || usage 2; collect "$2" "$3" ;;
    unscored) [[ $# -eq 3 ]] || usage 2; unscored "$2" "$3" ;;
    gpu-jobs) [[ $# -le 2 ]] || usage 2; gpu_jobs_for "${2:-auto}" ;;
    wait) [[ $# -ge 3 && $# -le 4 ]] || usage 2; wait_for "${@:2}" ;;
    stop) [[ $# -eq 2 ]] || usage 2; stop "$2" ;;
    resume) [[ $# -ge 3 && $# -le 4 ]] || usage 2; resume "${@:2}" ;;
    background) [[ $# -eq 4 ]] || usage 2; background "${@:2}" ;;  # internal: what `start` and `resume` launch
    -h|--help) usage 0 ;;
    *) echo "unknown command: $1" >&2; usage 2 ;;
esac
