#!/usr/bin/env bash
# demo.sh: piqc-slurm's main job, end to end on one Debian 12/13 machine, as root.
#   1. install what is missing (docker-slurm/setup.sh)
#   2. bring up a real local Slurm with 8 fake H100s (docker-slurm/cluster.sh up)
#   3. run a workload mix of GPU jobs as an unprivileged user, in two waves with a
#      pause between them (idle GPUs between jobs): a job that holds 4 GPUs and uses
#      2, a right-sized job, a job that fails after burning GPU time, an input-bound
#      job (its CPUs saturated, the GPU waiting), an under-batched inference job
#      (busy kernels at a quarter of the power limit), a small job on a big GPU, a
#      CPU-only job
#   4. show the GPUs' live utilization through NVML, then sacct's records
#   5. ingest sacct + the sampler summaries into the store, analyze, compute the idle
#      gaps, and show what piqc-slurm says: sacct-style GPU fields, a seff report, the
#      report the Epilog appended to a job's own output file
#   6. write the digest of that mix, and the digest of the shipped 100-GPU week
#      (examples/cluster-week, simulated into a store of its own), and print where
#      both are and their headline figures
# Settings: DEMO_SECONDS (length of each GPU job, default 40), DEMO_OUT (where the
# digests and the week's store go, default /tmp/piqc-demo).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${DEMO_SECONDS:-40}
OUT=${DEMO_OUT:-/tmp/piqc-demo}
T0=$(date +%s)
cd "$REPO"
bash docker-slurm/setup.sh
bash docker-slurm/cluster.sh up
eval "$(bash docker-slurm/cluster.sh env)"
USER_NAME=${TEST_USER:-piqcuser}
HOME_DIR=$(getent passwd "$USER_NAME" | cut -d: -f6)

submit() { # name gres script [sbatch options...]
    local name=$1 gres=$2 script=$3
    shift 3
    runuser -u "$USER_NAME" -- env -i SLURM_CONF="$SLURM_CONF" HOME="$HOME_DIR" PATH="$PIQC_CLUSTER_DIR/bin:/usr/bin:/bin" \
        sh -c 'cd "$HOME" && exec sbatch --parsable "$@"' sbatch --job-name="$name" ${gres:+--gres=$gres} "$@" \
        -o "demo-%j.out" --wrap "$script"
}
load() { printf "exec fakegpu-work --seconds %s --load '%s'" "$SECS" "$1"; }

# The input-bound job's CPUs: burners in sessions of their own the script waits for, so sacct's
# TotalCPU counts them (tests/integration/test_findings_live.py says why each part is needed).
BURN="for i in 1 2 3 4; do timeout $((SECS - 5)) setsid sh -c 'while :; do :; done' & done;"
echo "== submitting the workload mix as $USER_NAME (two waves, idle GPUs between them)"
jobs=()
jobs+=("$(submit train-4gpu gpu:4 "$(load '[{"gpus":[0,1],"util":92,"util_jitter":4,"mem_gib":71,"mem_util":60}]')")")
jobs+=("$(submit train-right gpu:2 "$(load '[{"gpus":[0,1],"util":93,"util_jitter":3,"mem_gib":60,"mem_util":55}]')")")
jobs+=("$(submit crashy-finetune gpu:2 "fakegpu-work --seconds $((SECS / 2)) --load '[{\"gpus\":[0,1],\"util\":70,\"mem_gib\":30}]'; exit 1")")
jobs+=("$(submit cpu-etl "" "sleep $((SECS / 2))")")
echo "   wave 1: ${jobs[*]}"
sleep $((SECS + 15))
jobs+=("$(submit input-bound gpu:1 "$BURN $(load '[{"gpus":[0],"util":30,"util_jitter":5,"mem_gib":10,"mem_util":10}]'); wait" -c 1)")
jobs+=("$(submit infer-batch1 gpu:1 "$(load '[{"gpus":[0],"util":90,"util_jitter":3,"mem_gib":10,"mem_util":8,"power_frac":0.25}]')")")
jobs+=("$(submit nightly-classify gpu:1 "$(load '[{"gpus":[0],"util":35,"util_jitter":5,"mem_gib":9,"mem_util":20}]')")")
echo "   wave 2: ${jobs[*]:4}"

echo "== live GPU utilization (real pynvml over the fake driver), every 5 s"
deadline=$((SECONDS + SECS + 30))
while [ $SECONDS -lt $deadline ]; do
    "$REPO/.venv/bin/python" - <<'PY'
import pynvml
pynvml.nvmlInit()
cells = []
for i in range(pynvml.nvmlDeviceGetCount()):
    h = pynvml.nvmlDeviceGetHandleByIndex(i)
    m = pynvml.nvmlDeviceGetMemoryInfo(h)
    cells.append(f"gpu{pynvml.nvmlDeviceGetMinorNumber(h)} {pynvml.nvmlDeviceGetUtilizationRates(h).gpu:3d}% "
                 f"{m.used / 2**30:4.0f}G")
print("   " + " | ".join(cells))
PY
    [ -z "$(squeue -h -u "$USER_NAME" -o %i)" ] && break
    sleep 5
done
for j in "${jobs[@]}"; do
    for _ in $(seq 1 100); do
        st=$(sacct -X -n -P -j "$j" --format=State,JobName | head -1)
        case "$st" in RUNNING*|PENDING*|*"|allocation"|"") sleep 0.5;; *) break;; esac
    done
done
echo "== sacct"
sacct -X -j "$(IFS=,; echo "${jobs[*]}")" --format=JobID,JobName%18,User,State,ExitCode,Elapsed,AllocTRES%60
PIQC="$REPO/.venv/bin/piqc-slurm"
echo "== piqc-slurm ingest (sacct records + the sampler summaries the Epilogs delivered)"
"$PIQC" ingest --create-store --since now-2hours
if "$PIQC" sacct --help >/dev/null 2>&1; then
    echo "== piqc-slurm sacct: the same jobs with their GPU use and cost"
    "$PIQC" sacct -X -j "$(IFS=,; echo "${jobs[*]}")" \
        -o JobID,JobName%18,State,Elapsed,AllocGPUs,GPUsUsed,GPUUtilAvg,GPUMemPeak,CostUSD,WasteUSD
fi
echo "== piqc-slurm seff ${jobs[0]} (the 4-GPU training job)"
"$PIQC" seff "${jobs[0]}"
echo "== the report the Epilog appended to that job's own output file"
tail -n 9 "$HOME_DIR/demo-${jobs[0]}.out"
START=$(date -d "@$T0" +%Y-%m-%dT%H:%M:%S)
END=$(date -d "@$(( $(date +%s) + 1 ))" +%Y-%m-%dT%H:%M:%S)
echo "== piqc-slurm analyze and gaps over the mix's window ($START to $END)"
"$PIQC" analyze -S "$START" -E "$END"
"$PIQC" gaps -S "$START" -E "$END"
mkdir -p "$OUT"
echo "== the digest of the mix"
"$PIQC" digest -S "$START" -E "$END" -o "$OUT/mix.html"
echo "== the shipped 100-GPU week (examples/cluster-week, seed 7), in a store of its own"
rm -f "$OUT/week.db" "$OUT/week.db-wal" "$OUT/week.db-shm"
"$REPO/.venv/bin/python" examples/cluster-week/generate.py --seed 7 > "$OUT/week.json"
WEEK=(--db "sqlite:///$OUT/week.db")
"$PIQC" "${WEEK[@]}" simulate -q --scenario "$OUT/week.json"
"$PIQC" "${WEEK[@]}" analyze -q -S 2026-11-16 -E 2026-11-26
"$PIQC" "${WEEK[@]}" gaps -M week -S 2026-11-16 -E 2026-11-23 --by gputype
"$PIQC" "${WEEK[@]}" digest -S 2026-11-16 -E 2026-11-23 -o "$OUT/week.html"
echo "== done in $(( $(date +%s) - T0 )) s: the digests are $OUT/mix.html and $OUT/week.html"
echo "   (open them in a browser; the cluster stays up: docker-slurm/cluster.sh down to stop it)"
