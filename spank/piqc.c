/*****************************************************************************
 *  piqc.c - SPANK plugin: let users choose piqc-slurm's GPU sampling per job
 *
 *  Adds --gpu-monitor=off|on|SECONDS[,nowatch]|nowatch to sbatch, srun and
 *  salloc.  `nowatch` (alone: on, the site interval) asks the sampler not to
 *  run its live rules (notices, the cancel policy) for the job; the Prolog
 *  honours it where the site's [watch] allow_opt_out is true.  The choice
 *  is checked at submit time and handed to the slurmd Prolog (which starts
 *  piqc-slurm's sampler) through the job-control environment:
 *
 *      spank_job_control_setenv("PIQC_GPU_MONITOR", "off" | "<seconds>" |
 *                               "<seconds>,nowatch")
 *
 *  so that the slurmd Prolog sees SPANK_PIQC_GPU_MONITOR, and a batch
 *  script or salloc shell sees SLURM_SPANK_PIQC_GPU_MONITOR (the tasks of a
 *  job made by srun do not).  Nothing is set when the option is not given:
 *  the Prolog then uses the site's default interval.
 *
 *  plugstack.conf arguments (all optional):
 *
 *      default_interval=SECONDS  what `on` means                    [1]
 *      min_interval=SECONDS      site minimum; smaller values raised [1]
 *      allow_opt_out=0|1         whether `off` is honoured           [1]
 *      spool=DIR                 piqc-slurm's spool_dir: record job info
 *                                for the Epilog's report             [off]
 *                                (%n: this slurmd's node name, for a
 *                                host that runs several slurmd)
 *
 *  Job info for the Epilog (with spool=DIR): the slurmd Epilog of 22.05 has
 *  neither the array ids nor the job name, so it cannot expand %A, %a or %x
 *  in the job's output pattern to find the file for its report.  The batch
 *  step's slurmstepd has them: in slurm_spank_init_post_opt (remote context,
 *  still root, after the job's environment is in place, before the job's
 *  output file is opened) this plugin writes them to DIR/jobinfo/<jobid>:
 *
 *      piqc-jobinfo/1
 *      job_id=<S_JOB_ID>
 *      uid=<S_JOB_UID>
 *      array_job_id=<S_JOB_ARRAY_ID: 0 outside an array>
 *      array_task_id=<S_JOB_ARRAY_TASK_ID: 4294967294 (NO_VAL) outside one>
 *      job_name=<SLURM_JOB_NAME of the job's environment, hex-encoded>
 *
 *  Only the batch step writes (it runs on the node whose Epilog writes the
 *  report; the extern step's environment has no SLURM_JOB_NAME).  The name
 *  is the user's text (newlines, `|`, `../`): hex keeps it one line.  The
 *  file is root-only (0600) in a root-only directory, never written through
 *  a symlink (openat with O_NOFOLLOW from the spool down, O_EXCL temp file,
 *  renamed into place), at most 4 KiB.  Every failure is logged and the job
 *  goes on: without the file the Epilog still reports for patterns that
 *  need no job info (%j, %u, %N, ...) and logs why it cannot for others.
 *  piqc-slurm's Epilog (hooks/jobinfo.py) reads, validates and removes it.
 *
 *  Users can set SLURM_SPANK_PIQC_GPU_MONITOR without this plugin, so the
 *  Prolog must validate and clamp the value again against root's config:
 *  this plugin is a convenience and an early, friendly refusal, not a
 *  security boundary.
 *
 *  Slurm 22.05 notes (see shared/SLURM-FACTS.md):
 *   - the option callback gets no spank_t and also runs in slurmstepd
 *     (twice per srun step), so it only parses and records; it never
 *     refuses anything remotely, where refusing would kill a running job;
 *   - spank_job_control_getenv/_setenv segfault in job_prolog/job_epilog on
 *     22.05.8, so this plugin defines neither hook.
 *
 *  Build: `make` (needs libslurm-dev of the running Slurm major version);
 *  `make check` builds with -Werror.
 *****************************************************************************/

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <slurm/slurm.h>	/* SLURM_BATCH_SCRIPT */
#include <slurm/spank.h>

/*
 *  All SPANK plugins must define this macro for the Slurm plugin loader.
 */
SPANK_PLUGIN(piqc, 1);

/*
 *  Defaults and limits
 */
#define PIQC_ENV_NAME       "PIQC_GPU_MONITOR" /* Prolog: SPANK_PIQC_GPU_MONITOR */
#define PIQC_MAX_ARG_LEN    32                 /* longer option values are refused */
#define PIQC_VALUE_LEN      32                 /* formatted value buffer */
#define PIQC_MAX_SECONDS    86400.0            /* one day: anything longer is a typo */
#define PIQC_SITE_FLOOR     0.1                /* smallest site interval (config.py) */

#define PIQC_SPOOL_MAX      1024               /* longest spool= directory */
#define PIQC_NAME_MAX       1024               /* longer job names are not recorded */
#define PIQC_JOBINFO_MAX    4096               /* a jobinfo file is never larger */
#define PIQC_JOBINFO_DIR    "jobinfo"          /* under spool= */
#define PIQC_JOBINFO_FORMAT "piqc-jobinfo/1"   /* first line; hooks/jobinfo.py */

#define PIQC_DEFAULT_INTERVAL 1.0
#define PIQC_DEFAULT_MIN      1.0
#define PIQC_DEFAULT_OPT_OUT  1

enum piqc_mode {
	PIQC_UNSET = 0,   /* option not given: set nothing */
	PIQC_OFF,         /* --gpu-monitor=off */
	PIQC_ON,          /* --gpu-monitor=on: the site's default interval */
	PIQC_SECONDS      /* --gpu-monitor=SECONDS */
};

/* Site settings from plugstack.conf (parsed in slurm_spank_init). */
static double default_interval = PIQC_DEFAULT_INTERVAL;
static double min_interval = PIQC_DEFAULT_MIN;
static int allow_opt_out = PIQC_DEFAULT_OPT_OUT;
static int site_parsed = 0;
static char spool_dir[PIQC_SPOOL_MAX] = "";    /* "": no job info is written */

/* The user's choice, recorded by the option callback. */
static enum piqc_mode user_mode = PIQC_UNSET;
static double user_seconds = 0.0;
static char user_arg[PIQC_MAX_ARG_LEN + 1] = "";
static int user_nowatch = 0;                   /* ",nowatch" (or "nowatch") given */

static int gpu_monitor_opt_cb(int val, const char *optarg, int remote);

/*
 *  Option table.  Registered from slurm_spank_init with
 *  spank_option_register() rather than exported as `spank_options`:
 *  Slurm 22.05 ignores a static spank_options table in the allocator
 *  context, so sbatch and salloc would not know the option.
 */
static struct spank_option spank_opts[] = {
	{ "gpu-monitor", "off|on|SECONDS[,nowatch]",
	  "GPU sampling for this job (piqc-slurm): 'off' to opt out, 'on' for "
	  "the site default interval, or seconds between samples (e.g. 5 or "
	  "0.5; raised to the site minimum); ',nowatch' (or 'nowatch' alone) "
	  "for no live notices or cancel policy while the job runs.",
	  1, 0, gpu_monitor_opt_cb },
	SPANK_OPTIONS_TABLE_END
};

static int parse_seconds(const char *s, double *out, const char **why);
static int format_seconds(double secs, char *buf, size_t len);
static void printable(const char *s, char *buf, size_t len);
static void parse_site_args(int ac, char **av);
static int valid_spool(const char *dir, const char **why);
static int submit_context(void);
static void record_jobinfo(spank_t sp);

/*
 *  Hooks
 */

/*
 *  Runs first in every context (srun, sbatch, salloc, slurmd, slurmstepd),
 *  before any option callback: read the plugstack.conf words (available
 *  everywhere) and register the option.  Never fails.
 */
int slurm_spank_init(spank_t sp, int ac, char **av)
{
	spank_context_t ctx = spank_context();
	struct spank_option *opt;
	spank_err_t rc;

	parse_site_args(ac, av);

	/* slurmd itself never sees job options. */
	if (ctx != S_CTX_LOCAL && ctx != S_CTX_ALLOCATOR && ctx != S_CTX_REMOTE)
		return 0;

	for (opt = spank_opts; opt->name != NULL; opt++) {
		rc = spank_option_register(sp, opt);
		if (rc != ESPANK_SUCCESS)
			slurm_error("piqc: cannot register --%s: %s",
				    opt->name, spank_strerror(rc));
	}
	return 0;
}

/*
 *  After the options are processed.  In srun/sbatch/salloc: apply the site
 *  policy to the user's choice and put it in the job-control environment;
 *  returns -1 only to refuse `off` where the site requires monitoring.  In
 *  slurmstepd (remote): write the batch step's job info (record_jobinfo).
 *  Every other path returns 0.
 */
int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	char buf[PIQC_VALUE_LEN];
	char full[PIQC_VALUE_LEN + 16];
	char shown[PIQC_VALUE_LEN];
	const char *value = "off";
	double secs;
	spank_err_t rc;

	(void) ac;
	(void) av;

	/* slurmstepd: record the job info the Epilog's report needs.  Never
	 * refuses: a failure here would fail a job that is about to run. */
	if (spank_remote(sp) == 1) {
		record_jobinfo(sp);
		return 0;
	}

	if (!submit_context() || user_mode == PIQC_UNSET)
		return 0;

	if (user_mode == PIQC_OFF) {
		if (!allow_opt_out) {
			slurm_error("piqc: --gpu-monitor=off refused: this site "
				    "requires GPU monitoring for every job "
				    "(use on or a number of seconds)");
			return -1;
		}
	} else {
		secs = (user_mode == PIQC_ON) ? default_interval : user_seconds;
		if (secs < min_interval) {
			if (format_seconds(min_interval, shown, sizeof(shown)) == 0)
				slurm_info("piqc: --gpu-monitor=%s raised to the "
					   "site minimum of %s seconds",
					   user_arg, shown);
			secs = min_interval;
		}
		if (format_seconds(secs, buf, sizeof(buf)) < 0) {
			slurm_error("piqc: cannot format --gpu-monitor=%s: "
				    "the site default applies", user_arg);
			return 0;
		}
		value = buf;
		if (user_nowatch) {
			(void) snprintf(full, sizeof(full), "%s,nowatch", buf);
			value = full;
		}
	}

	rc = spank_job_control_setenv(sp, PIQC_ENV_NAME, value, 1);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("piqc: cannot pass --gpu-monitor=%s to the job "
			    "(%s): the site default applies",
			    user_arg, spank_strerror(rc));
		return 0;
	}
	slurm_debug("piqc: job control env SPANK_%s=%s", PIQC_ENV_NAME, value);
	return 0;
}

/*
 *  Option callback: no spank_t here, and it also runs in slurmstepd (twice
 *  per srun step), so it only parses and records the value; the same
 *  argument always gives the same result.  A bad value is refused
 *  (return -1) at submit only; remotely it is logged and ignored.
 */
static int gpu_monitor_opt_cb(int val, const char *optarg, int remote)
{
	const char *why = NULL;
	char shown[PIQC_MAX_ARG_LEN + 1];
	char head[PIQC_MAX_ARG_LEN + 1];
	enum piqc_mode mode;
	double secs = 0.0;
	int nowatch = 0;
	size_t n;

	(void) val;

	/* "nowatch" alone means on; a ",nowatch" suffix goes with the rest */
	if (optarg != NULL && strlen(optarg) <= PIQC_MAX_ARG_LEN) {
		(void) snprintf(head, sizeof(head), "%s", optarg);
		n = strlen(head);
		if (strcasecmp(head, "nowatch") == 0) {
			(void) snprintf(head, sizeof(head), "on");
			nowatch = 1;
		} else if (n > 8 && strcasecmp(head + n - 8, ",nowatch") == 0) {
			head[n - 8] = '\0';
			nowatch = 1;
		}
	} else {
		head[0] = '\0';
	}

	if (optarg == NULL) {
		why = "a value is required";
		mode = PIQC_UNSET;
	} else if (strcasecmp(head, "off") == 0) {
		mode = PIQC_OFF;
	} else if (strcasecmp(head, "on") == 0) {
		mode = PIQC_ON;
	} else if (parse_seconds(nowatch ? head : optarg, &secs, &why) == 0) {
		mode = PIQC_SECONDS;
	} else {
		mode = PIQC_UNSET;
	}

	printable(optarg ? optarg : "", shown, sizeof(shown));

	if (mode == PIQC_UNSET) {
		if (remote) {
			slurm_debug("piqc: ignoring --gpu-monitor=%s: %s",
				    shown, why);
			return 0;
		}
		slurm_error("piqc: --gpu-monitor=%s: %s; use off, on, or a "
			    "positive number of seconds such as 5 or 0.5 "
			    "(either may end in ,nowatch)",
			    shown, why);
		return -1;
	}

	/* Refuse a forbidden opt-out here, so that the user also gets
	 * Slurm's "Invalid --gpu-monitor argument" line; slurm_spank_init
	 * has parsed the site config by now, init_post_opt checks again. */
	if (mode == PIQC_OFF && !remote && site_parsed && !allow_opt_out
	    && submit_context()) {
		slurm_error("piqc: --gpu-monitor=off refused: this site "
			    "requires GPU monitoring for every job "
			    "(use on or a number of seconds)");
		return -1;
	}

	user_mode = mode;
	user_seconds = secs;
	user_nowatch = nowatch;
	(void) snprintf(user_arg, sizeof(user_arg), "%s", shown);
	return 0;
}

/*
 *  Helpers
 */

/*
 *  True where a job is being made: sbatch/salloc (allocator), and srun
 *  (local) outside an allocation.  An srun inside a job only starts a step:
 *  the job's choice was settled at submit and the Prolog has run, and the
 *  job's environment hands the option back to every such srun, so acting
 *  there would repeat notes on each step and, after a policy change, fail
 *  steps of jobs already running.
 */
static int submit_context(void)
{
	spank_context_t ctx = spank_context();

	if (ctx == S_CTX_ALLOCATOR)
		return 1;
	return (ctx == S_CTX_LOCAL && getenv("SLURM_JOB_ID") == NULL);
}

/*
 *  Parse a positive number of seconds written as plain decimal digits with
 *  at most one '.', e.g. "5", "0.5", "10.", ".25".  No sign, exponent,
 *  blanks, hex, inf or nan.  Parsed by hand so that the locale's decimal
 *  separator cannot change the meaning.  Returns 0 and sets *out, or -1
 *  and sets *why.
 */
static int parse_seconds(const char *s, double *out, const char **why)
{
	size_t len, i;
	int digits = 0, dots = 0;
	double v = 0.0, scale = 1.0;

	if (s == NULL || s[0] == '\0') {
		*why = "a value is required";
		return -1;
	}
	len = strnlen(s, PIQC_MAX_ARG_LEN + 1);
	if (len > PIQC_MAX_ARG_LEN) {
		*why = "value too long";
		return -1;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char) s[i];

		if (c == '.') {
			if (++dots > 1) {
				*why = "not a number of seconds";
				return -1;
			}
		} else if (isdigit(c)) {
			digits++;
			if (dots) {
				scale /= 10.0;
				v += (c - '0') * scale;
			} else {
				v = v * 10.0 + (c - '0');
			}
		} else if (c == '-' && i == 0) {
			*why = "must be greater than 0";
			return -1;
		} else {
			*why = "not a number of seconds";
			return -1;
		}
	}
	if (digits == 0) {
		*why = "not a number of seconds";
		return -1;
	}
	if (!(v > 0.0)) {
		*why = "must be greater than 0";
		return -1;
	}
	if (v > PIQC_MAX_SECONDS) {
		*why = "must be at most 86400 seconds";
		return -1;
	}
	*out = v;
	return 0;
}

/*
 *  Write secs (0 < secs <= PIQC_MAX_SECONDS) as "5", "0.5" or "1.25":
 *  milliseconds, integer arithmetic only (locale-proof), trailing zeros
 *  dropped.  Returns 0, or -1 if out of range or the buffer is too small.
 */
static int format_seconds(double secs, char *buf, size_t len)
{
	long ms, whole, frac;
	int n;

	if (!(secs > 0.0) || secs > PIQC_MAX_SECONDS || len == 0)
		return -1;
	ms = (long) (secs * 1000.0 + 0.5);
	if (ms <= 0)
		return -1;
	whole = ms / 1000;
	frac = ms % 1000;
	if (frac == 0)
		n = snprintf(buf, len, "%ld", whole);
	else if (frac % 100 == 0)
		n = snprintf(buf, len, "%ld.%01ld", whole, frac / 100);
	else if (frac % 10 == 0)
		n = snprintf(buf, len, "%ld.%02ld", whole, frac / 10);
	else
		n = snprintf(buf, len, "%ld.%03ld", whole, frac);
	if (n < 0 || (size_t) n >= len)
		return -1;
	return 0;
}

/* Copy s for a log line: bounded, non-printable bytes as '?'. */
static void printable(const char *s, char *buf, size_t len)
{
	size_t i;

	if (len == 0)
		return;
	for (i = 0; i + 1 < len && s[i] != '\0'; i++)
		buf[i] = isprint((unsigned char) s[i]) ? s[i] : '?';
	buf[i] = '\0';
}

/*
 *  plugstack.conf words after the .so path.  A bad word is logged and the
 *  default kept: a typo in the site config must never stop job submission.
 */
static void parse_site_args(int ac, char **av)
{
	int i;
	double secs;
	const char *why = NULL;
	char shown[PIQC_MAX_ARG_LEN + 1];

	default_interval = PIQC_DEFAULT_INTERVAL;
	min_interval = PIQC_DEFAULT_MIN;
	allow_opt_out = PIQC_DEFAULT_OPT_OUT;
	spool_dir[0] = '\0';

	for (i = 0; i < ac; i++) {
		const char *arg = av[i];

		why = NULL;
		if (arg == NULL)
			continue;
		printable(arg, shown, sizeof(shown));
		if (strncmp(arg, "default_interval=", 17) == 0) {
			if (parse_seconds(arg + 17, &secs, &why) < 0 ||
			    secs < PIQC_SITE_FLOOR) {
				slurm_error("piqc: plugstack.conf: bad %s (%s): "
					    "keeping the default", shown,
					    why ? why : "below 0.1 seconds");
				continue;
			}
			default_interval = secs;
		} else if (strncmp(arg, "min_interval=", 13) == 0) {
			if (parse_seconds(arg + 13, &secs, &why) < 0 ||
			    secs < PIQC_SITE_FLOOR) {
				slurm_error("piqc: plugstack.conf: bad %s (%s): "
					    "keeping the default", shown,
					    why ? why : "below 0.1 seconds");
				continue;
			}
			min_interval = secs;
		} else if (strcmp(arg, "allow_opt_out=0") == 0) {
			allow_opt_out = 0;
		} else if (strcmp(arg, "allow_opt_out=1") == 0) {
			allow_opt_out = 1;
		} else if (strncmp(arg, "allow_opt_out=", 14) == 0) {
			slurm_error("piqc: plugstack.conf: bad %s (use 0 or 1): "
				    "keeping the default", shown);
		} else if (strncmp(arg, "spool=", 6) == 0) {
			if (!valid_spool(arg + 6, &why)) {
				slurm_error("piqc: plugstack.conf: bad %s (%s): "
					    "no job info is recorded", shown, why);
				continue;
			}
			(void) snprintf(spool_dir, sizeof(spool_dir), "%s",
					arg + 6);
		} else {
			slurm_error("piqc: plugstack.conf: ignoring unknown "
				    "argument '%s' (known: default_interval=, "
				    "min_interval=, allow_opt_out=0|1, spool=DIR)",
				    shown);
		}
	}

	if (default_interval < min_interval) {
		slurm_error("piqc: plugstack.conf: default_interval is below "
			    "min_interval: `on` uses min_interval");
		default_interval = min_interval;
	}
	site_parsed = 1;
}

/*
 *  spool=DIR: an absolute path of printable, non-blank bytes that fits.
 *  Returns 1, or 0 and sets *why.
 */
static int valid_spool(const char *dir, const char **why)
{
	size_t i, len = strnlen(dir, PIQC_SPOOL_MAX);

	if (len == 0 || dir[0] != '/') {
		*why = "not an absolute path";
		return 0;
	}
	if (len >= PIQC_SPOOL_MAX) {
		*why = "path too long";
		return 0;
	}
	for (i = 0; i < len; i++) {
		if (!isgraph((unsigned char) dir[i])) {
			*why = "blank or non-printable byte in the path";
			return 0;
		}
	}
	return 1;
}

/*
 *  Open the existing directory `path` (relative to `at`) without following a
 *  symlink, and check it is root's own: a directory owned by uid 0 that
 *  group and others cannot write.  Returns the fd, or -1 and sets *why.
 */
static int open_root_dir(int at, const char *path, const char **why)
{
	struct stat st;
	int fd = openat(at, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
			O_CLOEXEC);

	if (fd < 0) {
		*why = (errno == ELOOP || errno == ENOTDIR) ?
			"is a symlink or not a directory" : strerror(errno);
		return -1;
	}
	if (fstat(fd, &st) < 0) {
		*why = strerror(errno);
	} else if (!S_ISDIR(st.st_mode)) {
		*why = "is not a directory";
	} else if (st.st_uid != 0) {
		*why = "is not owned by root";
	} else if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		*why = "is writable by group or others";
	} else {
		return fd;
	}
	(void) close(fd);
	return -1;
}

/* write(2) until every byte is out; 0, or -1 with errno set. */
static int write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t) n;
	}
	return 0;
}

/*
 *  spool= with each "%n" replaced by this slurmd's node name, as slurm.conf's
 *  SlurmdSpoolDir takes %n where one host runs several slurmd (each node then
 *  has its own spool).  slurmstepd puts its node name in its own environment
 *  (SLURMD_NODENAME) before any plugin runs; Slurm's node names are letters,
 *  digits, '.', '_' and '-': anything else is refused.  Returns 0, or -1 and
 *  sets *why.
 */
static int expand_spool(char *out, size_t size, const char **why)
{
	const char *node = NULL, *p, *piece;
	size_t n = 0, len, i;

	for (p = spool_dir; *p; p++) {
		piece = p;
		len = 1;
		if (p[0] == '%' && p[1] == 'n') {
			if (!node) {
				node = getenv("SLURMD_NODENAME");
				if (!node || !node[0]) {
					*why = "%n, but no SLURMD_NODENAME";
					return -1;
				}
				for (i = 0; node[i]; i++) {
					if (!isalnum((unsigned char) node[i]) &&
					    !strchr("._-", node[i])) {
						*why = "%n, but the node name is "
						       "not a plain name";
						return -1;
					}
				}
			}
			piece = node;
			len = strlen(node);
			p++;
		}
		if (n + len >= size) {
			*why = "path too long";
			return -1;
		}
		memcpy(out + n, piece, len);
		n += len;
	}
	out[n] = '\0';
	return 0;
}

/*
 *  Put `len` bytes at <spool>/jobinfo/<job_id> as root: a temp file made
 *  with O_EXCL|O_NOFOLLOW (mode 0600) in the root-only jobinfo directory,
 *  renamed over the final name (rename never follows a symlink, and a
 *  requeued job's earlier file is replaced whole).  Logs every failure.
 */
static void write_jobinfo(uint32_t job_id, const char *data, size_t len)
{
	char tmp[64], final[16];
	const char *why = NULL;
	int sfd, dfd, fd;
	char spool[PIQC_SPOOL_MAX];

	if (expand_spool(spool, sizeof(spool), &why) < 0) {
		slurm_error("piqc: job %u: spool=%s: %s: no job info for the "
			    "report", job_id, spool_dir, why);
		return;
	}

	if (mkdir(spool, 0700) < 0 && errno != EEXIST) {
		slurm_info("piqc: job %u: cannot create spool %s: %s: no job "
			   "info for the report", job_id, spool,
			   strerror(errno));
		return;
	}
	sfd = open_root_dir(AT_FDCWD, spool, &why);
	if (sfd < 0) {
		slurm_error("piqc: job %u: spool %s %s: no job info for the "
			    "report", job_id, spool, why);
		return;
	}
	if (mkdirat(sfd, PIQC_JOBINFO_DIR, 0700) < 0 && errno != EEXIST) {
		slurm_error("piqc: job %u: cannot create %s/%s: %s", job_id,
			    spool, PIQC_JOBINFO_DIR, strerror(errno));
		(void) close(sfd);
		return;
	}
	dfd = open_root_dir(sfd, PIQC_JOBINFO_DIR, &why);
	(void) close(sfd);
	if (dfd < 0) {
		slurm_error("piqc: job %u: %s/%s %s: no job info for the "
			    "report", job_id, spool, PIQC_JOBINFO_DIR, why);
		return;
	}
	(void) snprintf(final, sizeof(final), "%u", job_id);
	(void) snprintf(tmp, sizeof(tmp), ".%u.tmp.%ld", job_id,
			(long) getpid());
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW |
		    O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST) {	/* left by a crashed stepd */
		(void) unlinkat(dfd, tmp, 0);
		fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL |
			    O_NOFOLLOW | O_CLOEXEC, 0600);
	}
	if (fd < 0) {
		slurm_error("piqc: job %u: cannot create %s/%s/%s: %s", job_id,
			    spool, PIQC_JOBINFO_DIR, tmp, strerror(errno));
		(void) close(dfd);
		return;
	}
	if (write_all(fd, data, len) < 0) {
		slurm_error("piqc: job %u: cannot write %s/%s/%s: %s", job_id,
			    spool, PIQC_JOBINFO_DIR, tmp, strerror(errno));
		(void) close(fd);
		(void) unlinkat(dfd, tmp, 0);
		(void) close(dfd);
		return;
	}
	if (close(fd) < 0 || renameat(dfd, tmp, dfd, final) < 0) {
		slurm_error("piqc: job %u: cannot put %s/%s/%s in place: %s",
			    job_id, spool, PIQC_JOBINFO_DIR, final,
			    strerror(errno));
		(void) unlinkat(dfd, tmp, 0);
		(void) close(dfd);
		return;
	}
	(void) close(dfd);
	slurm_debug("piqc: job %u: job info in %s/%s/%s", job_id, spool,
		    PIQC_JOBINFO_DIR, final);
}

/*
 *  Remote context: in the batch step only, gather what the Epilog needs to
 *  expand the job's output pattern (%A %a %x) and write it (see the header
 *  comment for the format).  Every failure is logged; nothing is returned:
 *  the job runs whatever happens here.
 */
static void record_jobinfo(spank_t sp)
{
	static const char hex[] = "0123456789abcdef";
	uint32_t job_id = 0, step_id = 0, array_id = 0, task_id = 0;
	uid_t uid = 0;
	char name[PIQC_NAME_MAX + 1];
	char name_hex[2 * PIQC_NAME_MAX + 1];
	char buf[PIQC_JOBINFO_MAX];
	int have_name = 0, n;
	size_t i;
	spank_err_t rc;

	if (spool_dir[0] == '\0')
		return;
	rc = spank_get_item(sp, S_JOB_STEPID, &step_id);
	if (rc != ESPANK_SUCCESS) {
		slurm_error("piqc: cannot get the step id (%s): no job info "
			    "for the report", spank_strerror(rc));
		return;
	}
	if (step_id != SLURM_BATCH_SCRIPT)
		return;
	if ((rc = spank_get_item(sp, S_JOB_ID, &job_id)) != ESPANK_SUCCESS ||
	    (rc = spank_get_item(sp, S_JOB_UID, &uid)) != ESPANK_SUCCESS ||
	    (rc = spank_get_item(sp, S_JOB_ARRAY_ID, &array_id))
	    != ESPANK_SUCCESS ||
	    (rc = spank_get_item(sp, S_JOB_ARRAY_TASK_ID, &task_id))
	    != ESPANK_SUCCESS) {
		slurm_error("piqc: job %u: cannot get the job's ids (%s): no "
			    "job info for the report", job_id,
			    spank_strerror(rc));
		return;
	}
	if (job_id == 0) {
		slurm_error("piqc: job id 0: no job info for the report");
		return;
	}

	/* The name as fname.c's %x takes it: SLURM_JOB_NAME of job->env. */
	rc = spank_getenv(sp, "SLURM_JOB_NAME", name, sizeof(name));
	if (rc == ESPANK_SUCCESS) {
		for (i = 0; name[i] != '\0'; i++) {
			name_hex[2 * i] = hex[((unsigned char) name[i]) >> 4];
			name_hex[2 * i + 1] = hex[((unsigned char) name[i]) & 15];
		}
		name_hex[2 * i] = '\0';
		have_name = 1;
	} else if (rc == ESPANK_NOSPACE) {
		slurm_info("piqc: job %u: job name longer than %d bytes: not "
			   "recorded (%%x cannot be expanded for the report)",
			   job_id, PIQC_NAME_MAX);
	} else {
		slurm_info("piqc: job %u: no SLURM_JOB_NAME in the job's "
			   "environment (%s)", job_id, spank_strerror(rc));
	}

	n = snprintf(buf, sizeof(buf),
		     "%s\njob_id=%u\nuid=%lu\narray_job_id=%u\n"
		     "array_task_id=%u\n%s%s%s",
		     PIQC_JOBINFO_FORMAT, job_id, (unsigned long) uid,
		     array_id, task_id, have_name ? "job_name=" : "",
		     have_name ? name_hex : "", have_name ? "\n" : "");
	if (n < 0 || (size_t) n >= sizeof(buf)) {
		slurm_error("piqc: job %u: job info does not fit in %d bytes",
			    job_id, PIQC_JOBINFO_MAX);
		return;
	}
	write_jobinfo(job_id, buf, (size_t) n);
}
