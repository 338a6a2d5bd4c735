#!/usr/bin/env bash
# setup.sh: install everything piqc-slurm's demo and tests need on a Debian 12/13
# machine, as root; idempotent (a second run only checks).
#   - Debian packages: Slurm (slurmctld, slurmd, slurmdbd, client, libslurm-dev),
#     munge, MariaDB, PostgreSQL, a C toolchain, Python venv support, Chromium (the digest's browser test)
#   - a virtual environment at <repo>/.venv with piqc-slurm and its dev extras
# Settings: PIQC_VENV (default <repo>/.venv), PYTHON (default /usr/bin/python3).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${PIQC_VENV:-$REPO/.venv}
PYTHON=${PYTHON:-/usr/bin/python3}
PKGS="slurmctld slurmd slurmdbd slurm-client munge mariadb-server libslurm-dev postgresql
      gcc make libc6-dev python3 python3-venv python3-dev util-linux bsdutils procps
      docker-compose chromium fonts-dejavu-core libslurmdb-perl libslurm-perl"   # docker-compose only validates docker-slurm/compose.yaml (no engine needed);
                                 # chromium (headless) loads the digest in tests/integration/test_digest_browser.py
                                 # libslurm*-perl: Slurm's own seff script, when PIQC_SEFF_SCRIPT names it
                                 # (tests/integration/test_seff_live.py; Debian ships no seff)

[ "$(id -u)" = 0 ] || { echo "setup.sh: must run as root (installs Debian packages)" >&2; exit 1; }
missing=()
for p in $PKGS; do
    dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Debian's policy-rc.d (if any) keeps services from starting; cluster.sh starts its own.
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
stamp=$VENV/.piqc-installed
if [ ! -x "$VENV/bin/python" ]; then
    echo "setup.sh: creating $VENV" >&2
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall when setup.cfg, pyproject.toml or this script changed since the last install.
# editable_mode=compat: the editable install is one path in a .pth file, not setuptools' import
# finder, whose import at every interpreter start cost 17-23 ms of `python -c pass`'s 40 ms here
# (every piqc-slurm command pays it; bench/bench_cluster.py floor.python). pyproject.toml pins the
# setuptools that still has this mode.
if [ ! -f "$stamp" ] || [ "$REPO/setup.cfg" -nt "$stamp" ] || [ "$REPO/pyproject.toml" -nt "$stamp" ] \
        || [ "$REPO/docker-slurm/setup.sh" -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install -q --upgrade pip
    "$VENV/bin/python" -m pip install -q -e "$REPO[dev]" --config-settings editable_mode=compat
    touch "$stamp"
fi
echo "setup.sh: ready ($("$VENV/bin/piqc-slurm" --version))" >&2
