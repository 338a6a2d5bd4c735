#!/bin/bash
# docs/reference.sh: writes docs/reference.md from the CLI's own --help texts (run it after changing a command).
set -e
cd "$(dirname "$0")/.."
PY=.venv/bin/python
out=docs/reference.md
help() {  # $@: the command words
    echo
    echo '```'
    $PY -m piqc_slurm "$@" --help
    echo '```'
}
cmds=$($PY - <<'EOF'
from piqc_slurm.cli import _build_cli
for name in sorted(_build_cli().commands):
    print(name)
EOF
)
subs() {  # $1: a command group -> its subcommands
    $PY - "$1" <<'EOF'
import sys
from piqc_slurm.cli import _build_cli
for name in sorted(getattr(_build_cli().commands[sys.argv[1]], "commands", {})):
    print(name)
EOF
}
{
cat <<'EOF'
# piqc-slurm reference

Every command with its options, every query field, and where the config keys
and finding codes are described. The option texts below are the commands' own
`--help` output (`piqc-slurm COMMAND --help`, `python -m piqc_slurm` works
the same), pasted as they print.

- Config keys: [configuration.md](configuration.md) (every key, type, default
  and meaning; `piqc-slurm config show` prints the effective values).
- Finding codes: [findings.md](findings.md) (below, one line each).
- Installing and running it: [admin-guide.md](admin-guide.md); the nightly
  units: [../deploy/README.md](../deploy/README.md).

## Exit codes

Every command: 0 ok; 2 usage or config; 3 store; 4 sacct or parse; 5 spool
format; 6 mail (SMTP); 130 on ^C; errors are one line, `piqc-slurm: message`. `prolog` and
`epilog` always exit 0. `doctor` exits 1 if a check FAILs. `nightly`: 0 ok or
no new data, 10 ingest, 11 analyze, 12 gaps, 13 digest failed, 75 another run
holds the lock, 2 bad options, config or lock path, 143 stopped by SIGTERM.

## Commands

### `piqc-slurm`
EOF
help
for c in $cmds; do
    echo; echo "### \`piqc-slurm $c\`"; help "$c"
    for s in $(subs "$c"); do
        echo; echo "### \`piqc-slurm $c $s\`"; help "$c" "$s"
    done
done
for pair in nightly:nightly notify:notify-users; do
    mod=${pair%%:*}; c=${pair#*:}
    echo "$cmds" | grep -qx "$c" && continue
    [ -f piqc_slurm/commands/$mod.py ] || continue
    echo; echo "### \`piqc-slurm $c\`"; echo
    echo '```'
    $PY - "$mod" "$c" <<'EOF'
import importlib, sys
import click
mod = importlib.import_module(f"piqc_slurm.commands.{sys.argv[1]}")
g = click.Group("piqc-slurm", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
mod.register(g)
g.main([sys.argv[2], "--help"], prog_name="piqc-slurm", standalone_mode=False, obj={})
EOF
    echo '```'
done
cat <<'EOF'

## Query fields (`piqc-slurm sacct -o`)

`piqc-slurm sacct -e` lists them (any prefix of a name works, as in sacct:
`st` is Start; `NAME%N` sets a width; `ALL` is every field):

```
EOF
$PY -m piqc_slurm sacct -e
cat <<'EOF'
```

The fields of `costs -o` and `gaps -o` are in their `--help` above: `costs`
`Group|Jobs|Completed|GPUHours|SpendUSD|FailedSpendUSD|CostPerCompletedUSD|WasteUSD|RecoverablePerYearUSD`;
`gaps` `Node|GPUType|GPUs|IdleGPUHours|IdleUSD|DemandGPUHours|DemandUSD|NoDemandGPUHours|NoDemandUSD`
by default, plus `Cluster`, `GPU`, `Partition`, `DownGPUHours` (rules:
[gaps.md](gaps.md)).

## Finding codes

Stored by `analyze`, shown by `sacct -o Findings` and `seff`; counted in this
order, each code taking its dollars from what the ones before it left.
Each code's meaning, computation, advice and known false positives:
[findings.md](findings.md).

| code | in short |
|---|---|
| [`FAILED_SPEND`](findings.md#failed_spend) | GPU time of a run that started and did not complete (user's side: FAILED, TIMEOUT, OUT_OF_MEMORY, CANCELLED, DEADLINE; site's side: NODE_FAIL, PREEMPTED, BOOT_FAIL) |
| [`IDLE_GPUS`](findings.md#idle_gpus) | allocated GPUs that did no work over the job; advice: fewer GPUs |
| [`WRONG_TIER`](findings.md#wrong_tier) | the job would fit a cheaper GPU type with a large saving; advice: that type |
| [`INPUT_BOUND`](findings.md#input_bound) | the GPUs wait for data: low activity while the CPUs are saturated, or idle stretches between bursts |
| [`UNDER_BATCHED`](findings.md#under_batched) | GPUs in use doing a fraction of the work they could: too small a batch |
| [`RUNTIME_REGRESSION`](findings.md#runtime_regression) | a run of a recurring job (same name + user + account) much slower or costlier than the median of its earlier runs |
| [`NO_SAMPLES`](findings.md#no_samples) | a GPU job with no sampler data (hooks not wired, Prolog failed, monitoring off) |
EOF
} > $out
echo wrote $out; wc -l $out
