#!/usr/bin/env bash
# tests/run.sh: piqc-slurm's whole test suite, as root on Debian 12/13.
#   1. docker-slurm/setup.sh   Debian packages + .venv (idempotent)
#   2. ruff                     lint; errors fail the run
#   3. bench --quick            bench/run.py's quick mode (under 2 minutes): fails only on a
#                               gross regression, a figure over 5x bench/baseline.json's;
#                               only without extra arguments (CI's run), PIQC_BENCH=0 skips it
#   4. pytest                   unit tests on recorded fixtures, then integration
#                               tests on the real local Slurm (docker-slurm/cluster.sh,
#                               brought up by the session fixture); with
#                               PIQC_REQUIRE_SLURM=1 a skipped real-cluster test fails.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -m unit -x`.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
bash docker-slurm/setup.sh
.venv/bin/ruff check .
bench_rc=0
if [ $# -eq 0 ] && [ "${PIQC_BENCH:-1}" != 0 ]; then
    .venv/bin/python bench/run.py --quick --check bench/baseline.json --json /tmp/piqc-bench/quick.json \
        || bench_rc=$?
fi
export PIQC_REQUIRE_SLURM=${PIQC_REQUIRE_SLURM:-1}
.venv/bin/python -m pytest -p no:cacheprovider "$@" || exit $?
exit "$bench_rc"
