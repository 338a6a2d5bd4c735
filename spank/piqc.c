/*****************************************************************************
 *  piqc.c - SPANK plugin: let users choose piqc-slurm's GPU sampling per job
 *
 *  Adds --gpu-monitor=off|on|SECONDS to sbatch, srun and salloc.  The choice
 *  is checked at submit time and handed to the slurmd Prolog (which starts
 *  piqc-slurm's sampler) through the job-control environment:
 *
 *      spank_job_control_setenv("PIQC_GPU_MONITOR", "off" | "<seconds>")
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
 *  Build: `make` (needs libslurm-dev of the running Slurm major version).
 *****************************************************************************/

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

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

/* The user's choice, recorded by the option callback. */
static enum piqc_mode user_mode = PIQC_UNSET;
static double user_seconds = 0.0;
static char user_arg[PIQC_MAX_ARG_LEN + 1] = "";

static int gpu_monitor_opt_cb(int val, const char *optarg, int remote);

/*
 *  Option table.  Registered from slurm_spank_init with
 *  spank_option_register() rather than exported as `spank_options`:
 *  Slurm 22.05 ignores a static spank_options table in the allocator
 *  context, so sbatch and salloc would not know the option.
 */
static struct spank_option spank_opts[] = {
	{ "gpu-monitor", "off|on|SECONDS",
	  "GPU sampling for this job (piqc-slurm): 'off' to opt out, 'on' for "
	  "the site default interval, or seconds between samples (e.g. 5 or "
	  "0.5; raised to the site minimum).",
	  1, 0, gpu_monitor_opt_cb },
	SPANK_OPTIONS_TABLE_END
};

static int parse_seconds(const char *s, double *out, const char **why);
static int format_seconds(double secs, char *buf, size_t len);
static void printable(const char *s, char *buf, size_t len);
static void parse_site_args(int ac, char **av);
static int submit_context(void);

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
 *  After the options are processed: in srun/sbatch/salloc only, apply the
 *  site policy to the user's choice and put it in the job-control
 *  environment.  Returns -1 only to refuse `off` where the site requires
 *  monitoring; every other path returns 0.
 */
int slurm_spank_init_post_opt(spank_t sp, int ac, char **av)
{
	char buf[PIQC_VALUE_LEN];
	char shown[PIQC_VALUE_LEN];
	const char *value = "off";
	double secs;
	spank_err_t rc;

	(void) ac;
	(void) av;

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
	enum piqc_mode mode;
	double secs = 0.0;

	(void) val;

	if (optarg == NULL) {
		why = "a value is required";
		mode = PIQC_UNSET;
	} else if (strcasecmp(optarg, "off") == 0) {
		mode = PIQC_OFF;
	} else if (strcasecmp(optarg, "on") == 0) {
		mode = PIQC_ON;
	} else if (parse_seconds(optarg, &secs, &why) == 0) {
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
			    "positive number of seconds such as 5 or 0.5",
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
		} else {
			slurm_error("piqc: plugstack.conf: ignoring unknown "
				    "argument '%s' (known: default_interval=, "
				    "min_interval=, allow_opt_out=0|1)", shown);
		}
	}

	if (default_interval < min_interval) {
		slurm_error("piqc: plugstack.conf: default_interval is below "
			    "min_interval: `on` uses min_interval");
		default_interval = min_interval;
	}
	site_parsed = 1;
}
