/*****************************************************************************
 *  jobinfo_harness.c - run piqc.c's remote-context job-info writer outside
 *  slurmstepd, for tests/unit/test_hooks_jobinfo.py.
 *
 *  Links against piqc.c and stands in for the few Slurm symbols it calls:
 *  spank_get_item answers from the command line, as slurmstepd's would for
 *  the batch step (S_JOB_ID, S_JOB_UID, S_JOB_STEPID, S_JOB_ARRAY_ID,
 *  S_JOB_ARRAY_TASK_ID), spank_getenv from the job environment given here,
 *  with the same ESPANK_NOSPACE rule as Slurm's (strlcpy that does not fit);
 *  log lines go to stderr.
 *
 *      jobinfo_harness PLUGSTACK_WORD... -- STEP JOB UID ARRAY TASK [NAME]
 *
 *  No NAME: the job's environment has no SLURM_JOB_NAME.  STEP is a number
 *  or "batch" (SLURM_BATCH_SCRIPT) or "extern".  Exit status: what
 *  slurm_spank_init_post_opt returned (it must always be 0 remotely).
 *
 *  Build: gcc -I/usr/include -o harness jobinfo_harness.c piqc.c
 *****************************************************************************/

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include <slurm/slurm.h>
#include <slurm/spank.h>

int slurm_spank_init(spank_t sp, int ac, char **av);
int slurm_spank_init_post_opt(spank_t sp, int ac, char **av);

static uint32_t h_step, h_job, h_array, h_task;
static uid_t h_uid;
static const char *h_name;

static uint32_t num(const char *s)
{
	if (strcmp(s, "batch") == 0)
		return SLURM_BATCH_SCRIPT;
	if (strcmp(s, "extern") == 0)
		return SLURM_EXTERN_CONT;
	return (uint32_t) strtoul(s, NULL, 10);
}

spank_err_t spank_get_item(spank_t sp, spank_item_t item, ...)
{
	va_list ap;

	(void) sp;
	va_start(ap, item);
	switch (item) {
	case S_JOB_ID:
		*va_arg(ap, uint32_t *) = h_job;
		break;
	case S_JOB_STEPID:
		*va_arg(ap, uint32_t *) = h_step;
		break;
	case S_JOB_UID:
		*va_arg(ap, uid_t *) = h_uid;
		break;
	case S_JOB_ARRAY_ID:
		*va_arg(ap, uint32_t *) = h_array;
		break;
	case S_JOB_ARRAY_TASK_ID:
		*va_arg(ap, uint32_t *) = h_task;
		break;
	default:
		va_end(ap);
		return ESPANK_BAD_ARG;
	}
	va_end(ap);
	return ESPANK_SUCCESS;
}

spank_err_t spank_getenv(spank_t sp, const char *var, char *buf, int len)
{
	(void) sp;
	if (strcmp(var, "SLURM_JOB_NAME") != 0 || h_name == NULL)
		return ESPANK_ENV_NOEXIST;
	if (strlen(h_name) >= (size_t) len) {	/* strlcpy(buf, val, len) >= len */
		(void) snprintf(buf, (size_t) len, "%s", h_name);
		return ESPANK_NOSPACE;
	}
	strcpy(buf, h_name);
	return ESPANK_SUCCESS;
}

int spank_remote(spank_t sp)
{
	(void) sp;
	return 1;
}

spank_context_t spank_context(void)
{
	return S_CTX_REMOTE;
}

spank_err_t spank_option_register(spank_t sp, struct spank_option *opt)
{
	(void) sp;
	(void) opt;
	return ESPANK_SUCCESS;
}

spank_err_t spank_job_control_setenv(spank_t sp, const char *var,
				     const char *val, int overwrite)
{
	(void) sp;
	(void) var;
	(void) val;
	(void) overwrite;
	return ESPANK_SUCCESS;
}

const char *spank_strerror(spank_err_t err)
{
	return err == ESPANK_SUCCESS ? "Success" : "spank error";
}

#define LOGGER(fn, level)						\
	void fn(const char *fmt, ...)					\
	{								\
		va_list ap;						\
		va_start(ap, fmt);					\
		fprintf(stderr, level ": ");				\
		vfprintf(stderr, fmt, ap);				\
		fputc('\n', stderr);					\
		va_end(ap);						\
	}

LOGGER(slurm_info, "info")
LOGGER(slurm_error, "error")
LOGGER(slurm_debug, "debug")

int main(int argc, char **argv)
{
	int i, words;

	for (words = 1; words < argc && strcmp(argv[words], "--") != 0; words++)
		;
	if (argc - words - 1 < 5) {
		fprintf(stderr, "usage: %s WORD... -- STEP JOB UID ARRAY TASK "
			"[NAME]\n", argv[0]);
		return 2;
	}
	i = words + 1;
	h_step = num(argv[i]);
	h_job = num(argv[i + 1]);
	h_uid = (uid_t) num(argv[i + 2]);
	h_array = num(argv[i + 3]);
	h_task = num(argv[i + 4]);
	h_name = (argc > i + 5) ? argv[i + 5] : NULL;

	if (slurm_spank_init(NULL, words - 1, argv + 1) != 0)
		return 3;
	return slurm_spank_init_post_opt(NULL, words - 1, argv + 1);
}
