#!/usr/bin/env bash
# demo.sh: piqc-slurm's main job, end to end on one Debian 12/13 machine, as root.
#   1. install what is missing (docker-slurm/setup.sh)
#   2. bring up a real local Slurm with 8 fake H100s (docker-slurm/cluster.sh up)
#   3. run a small workload mix of GPU jobs as an unprivileged user: a job that
#      holds 4 GPUs and uses 2, an under-batched inference job, a small job on
#      a big GPU, a job that fails after burning GPU time, a CPU-only job
#   4. show the GPUs' live utilization through NVML, then sacct's records
#   5. ingest sacct + the sampler summaries into the store, and show what
#      piqc-slurm says of the jobs: sacct-style GPU fields and seff reports
# Settings: DEMO_SECONDS (length of each GPU job, default 40).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SECS=${DEMO_SECONDS:-40}
cd "$REPO"
bash docker-slurm/setup.sh
bash docker-slurm/cluster.sh up
eval "$(bash docker-slurm/cluster.sh env)"
USER_NAME=${TEST_USER:-piqcuser}
HOME_DIR=$(getent passwd "$USER_NAME" | cut -d: -f6)

submit() { # name gres script
    runuser -u "$USER_NAME" -- env -i SLURM_CONF="$SLURM_CONF" HOME="$HOME_DIR" PATH="$PIQC_CLUSTER_DIR/bin:/usr/bin:/bin" \
        sh -c 'cd "$HOME" && exec sbatch --parsable "$@"' sbatch --job-name="$1" ${2:+--gres=$2} -o "demo-%j.out" --wrap "$3"
}
load() { printf "exec fakegpu-work --seconds %s --load '%s'" "$SECS" "$1"; }

echo "== submitting the workload mix as $USER_NAME"
jobs=()
jobs+=("$(submit train-4gpu gpu:4 "$(load '[{"gpus":[0,1],"util":92,"util_jitter":4,"mem_gib":71,"mem_util":60}]')")")
jobs+=("$(submit infer-batch1 gpu:1 "$(load '[{"gpus":[0],"util":12,"util_jitter":3,"mem_gib":6,"mem_util":5}]')")")
jobs+=("$(submit nightly-classify gpu:1 "$(load '[{"gpus":[0],"util":35,"util_jitter":5,"mem_gib":9,"mem_util":20}]')")")
jobs+=("$(submit crashy-finetune gpu:2 "fakegpu-work --seconds $((SECS / 2)) --load '[{\"gpus\":[0,1],\"util\":70,\"mem_gib\":30}]'; exit 1")")
jobs+=("$(submit cpu-etl "" "sleep $((SECS / 2))")")
echo "   jobs: ${jobs[*]}"

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
"$PIQC" ingest --since now-2hours
if "$PIQC" sacct --help >/dev/null 2>&1; then
    echo "== piqc-slurm sacct: the same jobs with their GPU use and cost"
    "$PIQC" sacct -X -j "$(IFS=,; echo "${jobs[*]}")" \
        -o JobID,JobName%18,State,Elapsed,AllocGPUs,GPUsUsed,GPUUtilAvg,GPUMemPeak,CostUSD,WasteUSD
fi
echo "== piqc-slurm seff ${jobs[0]} (the 4-GPU training job)"
"$PIQC" seff "${jobs[0]}"
echo "== the report the Epilog appended to that job's own output file"
tail -n 9 "$HOME_DIR/demo-${jobs[0]}.out"
echo "== done: the cluster stays up (docker-slurm/cluster.sh down to stop it)"
