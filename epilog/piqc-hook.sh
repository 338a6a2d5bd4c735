#!/bin/sh
# piqc-slurm hook fragment for slurmd's Prolog and Epilog.
#
# Install it next to the site's own hooks instead of replacing them:
#   slurm.conf:  Prolog=/etc/slurm/prolog.d/*   Epilog=/etc/slurm/epilog.d/*
#                PrologFlags=Alloc   (required: the Prolog runs at allocation)
#   cp piqc-hook.sh /etc/slurm/prolog.d/50-piqc.sh
#   cp piqc-hook.sh /etc/slurm/epilog.d/50-piqc.sh
# (prolog.sh and epilog.sh in this folder are links to this one file.)
#
# Which hook it is comes from SLURM_SCRIPT_CONTEXT (prolog_slurmd or
# epilog_slurmd), else from the file name.  slurmd runs hooks with no PATH, so
# every program is named by absolute path.  A non-zero or hung hook drains
# the node: this wrapper bounds piqc-slurm with a hard timeout and exits 0 on
# every path, logging Begin/End with the job id to syslog.
#
# The job waits for the Prolog, so the Prolog runs piqc-slurm off the job's
# path: the wrapper logs Begin, runs itself again under setsid (a new session,
# fds on /dev/null: slurmd neither waits for it nor kills it) with the
# arguments `--piqc-detached-prolog JOB`, which puts `piqc-slurm prolog` (same
# timeout) in the background there and returns at once; End is logged with
# piqc-slurm's exit code when it ends.
# The Epilog of a job whose Prolog is still in flight waits for it (it finds
# that root-owned process by those arguments: piqc_slurm/hooks/inflight.py).
#
# Site settings (optional) are read from the file PIQC_HOOK_ENV names, as
# shell `export NAME=value` lines:
#   PIQC_BIN       absolute path of the piqc-slurm entry point
#   PIQC_CONFIG    piqc-slurm's config file
#   PIQC_TIMEOUT   seconds before the hook is killed (default 10 prolog, 30 epilog)
#   PIQC_HOOK_LOG  also append Begin/End lines, and piqc-slurm's own messages, to this file
PIQC_HOOK_ENV=/etc/default/piqc-slurm
PIQC_BIN=/opt/piqc/venv/bin/piqc-slurm
# Settings come from the file above only, never from the environment slurmd was given.
unset PIQC_HOOK_LOG PIQC_TIMEOUT PIQC_CONFIG

if [ -r "$PIQC_HOOK_ENV" ]; then
    . "$PIQC_HOOK_ENV" >/dev/null 2>&1
fi

case "${SLURM_SCRIPT_CONTEXT:-$0}" in
    prolog_slurmd|*prolog*) verb=prolog; default_timeout=10 ;;
    epilog_slurmd|*epilog*) verb=epilog; default_timeout=30 ;;
    *) verb=unknown ;;
esac

note() {
    /usr/bin/logger -t piqc-slurm -p daemon.info -- "$*" >/dev/null 2>&1
    if [ -n "${PIQC_HOOK_LOG:-}" ]; then
        printf '%s %s\n' "$(/bin/date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>"$PIQC_HOOK_LOG" 2>/dev/null
    fi
    return 0
}

detached=
if [ "$verb" = prolog ] && [ "${1:-}" = --piqc-detached-prolog ]; then
    detached=1
    job=$(printf '%s' "${2:-unknown}" | /usr/bin/tr -c 'A-Za-z0-9_.+-' '_')
else
    job=$(printf '%s' "${SLURM_JOB_ID:-unknown}" | /usr/bin/tr -c 'A-Za-z0-9_.+-' '_')  # one log line, whatever it holds
    note "$verb Begin job=$job node=${SLURMD_NODENAME:-?}"
fi
if [ "$verb" = unknown ]; then
    note "$verb End job=$job rc=- (cannot tell prolog from epilog: SLURM_SCRIPT_CONTEXT unset)"
    exit 0
fi
if [ ! -x "$PIQC_BIN" ]; then
    note "$verb End job=$job rc=- ($PIQC_BIN is not executable: nothing done)"
    exit 0
fi
if [ "$verb" = prolog ] && [ -z "$detached" ] && [ -x /usr/bin/setsid ] && [ -r "$0" ]; then
    # "$0" is this file (slurmd execs it by its path); $job is sanitised above and goes as one argument.
    # setsid in the foreground: the copy is in its own session before this returns, and it returns
    # at once (its work goes to the background there), so slurmd's kill of this hook's process
    # group on exit cannot reach it (`setsid -f` would race that kill).
    if /usr/bin/setsid /bin/sh "$0" --piqc-detached-prolog "$job" </dev/null >/dev/null 2>&1; then
        exit 0
    fi
    note "$verb job=$job: cannot start detached, running in the job's path"
fi
# piqc-slurm logs to syslog; where there is none (syslog = false), its stderr
# goes to PIQC_HOOK_LOG if set. Never to slurmd's pipes.
out=/dev/null
[ -n "${PIQC_HOOK_LOG:-}" ] && out=$PIQC_HOOK_LOG
run_piqc() {
    /usr/bin/timeout -k 2 "${PIQC_TIMEOUT:-$default_timeout}" "$PIQC_BIN" "$verb" </dev/null >>"$out" 2>&1
    rc=$?
    case $rc in
        0) why= ;;
        124|137) why=" (timed out)" ;;
        *) why=" (failed; see syslog)" ;;
    esac
    note "$verb End job=$job rc=$rc$why exit=0"
}
if [ -n "$detached" ]; then
    run_piqc &   # in this copy's own session; the copy exits now, its caller with it
    exit 0
fi
run_piqc
exit 0
