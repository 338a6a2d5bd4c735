/*
 * fakenvml.c - a fake NVIDIA driver library (libnvidia-ml.so.1) for tests.
 *
 * It stands in for GPU hardware so that the REAL pynvml (nvidia-ml-py) can be
 * exercised on machines without a GPU: pynvml dlopens "libnvidia-ml.so.1" by
 * name, so putting this library's directory on LD_LIBRARY_PATH (before the
 * process starts) makes every pynvml call land here.
 *
 * Static facts (GPUs, names, UUIDs, memory, power limits) come from a config
 * file; live readings (utilization, memory used, the running process) come
 * from per-GPU state files that the docker-slurm/fakegpu-work program writes
 * while a job "uses" a GPU.  Formats, the energy model and the fault
 * switches are documented in docker-slurm/FAKE-GPU.md.
 *
 * The optional per-load power_frac and sm/tensor/dram activity of the
 * scenario vocabulary arrive as *_ppm state keys: power_frac replaces the
 * util-based power, the activities feed the GPM metrics (H100/H200 names
 * only).
 *
 * Only what pynvml calls for a sampler is implemented.  Every entry point
 * returns real NVML error codes; nothing here prints except a one-line
 * diagnostic on stderr when the config file itself is malformed.
 *
 * Thread safety: the config is parsed on the first nvmlInit (refcount
 * 0 -> 1) under a mutex and is read-only afterwards; queries read files and
 * keep only a per-device "last energy value" and transient-fault counter
 * (fault flaky:..., gpu<MINOR>.flaky) under mutexes, so one process may
 * query from several threads.
 *
 * Live loads are read from gpu<MINOR>.state, or, when that one is missing,
 * stale or malformed, from a live gpu<MINOR>.state.<UID> (what fakegpu-work
 * writes when a stale state file of another user blocks the main name).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NVML_API __attribute__((visibility("default")))

/* ---- NVML ABI: return codes, enums, structs (as in nvml.h / pynvml) ---- */

typedef int nvmlReturn_t;
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_ALREADY_INITIALIZED = 5,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_INSUFFICIENT_POWER = 8,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_IRQ_ISSUE = 11,
    NVML_ERROR_LIBRARY_NOT_FOUND = 12,
    NVML_ERROR_FUNCTION_NOT_FOUND = 13,
    NVML_ERROR_CORRUPTED_INFOROM = 14,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_RESET_REQUIRED = 16,
    NVML_ERROR_OPERATING_SYSTEM = 17,
    NVML_ERROR_LIB_RM_VERSION_MISMATCH = 18,
    NVML_ERROR_IN_USE = 19,
    NVML_ERROR_MEMORY = 20,
    NVML_ERROR_NO_DATA = 21,
    NVML_ERROR_VGPU_ECC_NOT_SUPPORTED = 22,
    NVML_ERROR_INSUFFICIENT_RESOURCES = 23,
    NVML_ERROR_FREQ_NOT_SUPPORTED = 24,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_DEPRECATED = 26,
    NVML_ERROR_NOT_READY = 27,
    NVML_ERROR_GPU_NOT_FOUND = 28,
    NVML_ERROR_INVALID_STATE = 29,
    NVML_ERROR_RESET_TYPE_NOT_SUPPORTED = 30,
    NVML_ERROR_UNKNOWN = 999
};

enum { NVML_CLOCK_GRAPHICS = 0, NVML_CLOCK_SM = 1, NVML_CLOCK_MEM = 2, NVML_CLOCK_VIDEO = 3 };
enum { NVML_TEMPERATURE_GPU = 0 };

#define NVML_VALUE_NOT_AVAILABLE_UINT 0xFFFFFFFFu
#define NVML_STRUCT_VERSION(size, ver) ((unsigned)(size) | ((unsigned)(ver) << 24))

typedef struct { unsigned int gpu; unsigned int memory; } nvmlUtilization_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;
#define nvmlMemory_v2 NVML_STRUCT_VERSION(sizeof(nvmlMemory_v2_t), 2) /* 0x02000028 */

/* Plain nvmlDeviceGetComputeRunningProcesses is the v1 ABI (16-byte entries). */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
} nvmlProcessInfo_v1_t;

/* _v2 and _v3 both use 24-byte entries (pynvml: c_nvmlProcessInfo_v2_t). */
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

typedef struct {
    unsigned int version;
    unsigned int sensorType;
    int temperature;
} nvmlTemperature_v1_t;
#define nvmlTemperature_v1 NVML_STRUCT_VERSION(sizeof(nvmlTemperature_v1_t), 1) /* 0x0100000C */

/* GPM (GPU Performance Monitoring, Hopper and later).  Samples are opaque
 * handles the library allocates; metrics are computed between two samples. */
typedef struct fake_gpm_sample *nvmlGpmSample_t;

typedef struct {
    unsigned int version;
    unsigned int isSupportedDevice;
} nvmlGpmSupport_t;
#define NVML_GPM_SUPPORT_VERSION 1

typedef struct {
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    struct {
        char *shortName;
        char *longName;
        char *unit;
    } metricInfo;
} nvmlGpmMetric_t;

/* nvml.h sizes metrics[] with NVML_GPM_METRIC_MAX, which grows between
 * releases (pynvml 13.x: 477); only the first numMetrics entries are touched. */
typedef struct {
    unsigned int version;
    unsigned int numMetrics;
    nvmlGpmSample_t sample1;
    nvmlGpmSample_t sample2;
    nvmlGpmMetric_t metrics[];
} nvmlGpmMetricsGet_t;
#define NVML_GPM_METRICS_GET_VERSION 1
#define FAKE_GPM_METRIC_MAX 477u     /* pynvml's NVML_GPM_METRIC_MAX */

enum {
    NVML_GPM_METRIC_SM_UTIL = 2,
    NVML_GPM_METRIC_SM_OCCUPANCY = 3,
    NVML_GPM_METRIC_ANY_TENSOR_UTIL = 5,
    NVML_GPM_METRIC_DRAM_BW_UTIL = 10
};

_Static_assert(sizeof(nvmlMemory_v2_t) == 40, "nvmlMemory_v2_t layout");
_Static_assert(sizeof(nvmlProcessInfo_v1_t) == 16, "nvmlProcessInfo_v1_t layout");
_Static_assert(sizeof(nvmlProcessInfo_t) == 24, "nvmlProcessInfo_t layout");
_Static_assert(sizeof(nvmlTemperature_v1_t) == 12, "nvmlTemperature_v1_t layout");
_Static_assert(sizeof(nvmlGpmMetric_t) == 40, "nvmlGpmMetric_t layout");
_Static_assert(sizeof(nvmlGpmMetricsGet_t) == 24, "nvmlGpmMetricsGet_t header layout");

/* ---- the fake's own model ---- */

#define FAKE_MAX_GPUS 64
#define FAKE_STR_LEN 96            /* NVML_DEVICE_NAME_V2 / UUID_V2 buffer size */
#define FAKE_PATH_LEN 1024
#define FAKE_LINE_LEN 1024
#define FAKE_MAX_MINOR 9999
#define FAKE_DEFAULT_IDLE_W 60u
#define FAKE_DEFAULT_DRIVER "550.54.15"
#define FAKE_CUDA_DRIVER_VERSION 12040   /* what a 550 driver reports */
/* Energy files project their rate at most this far past their stamp
 * (fakegpu-work refreshes every 0.5 s); keep in step with fakegpu-work. */
#define FAKE_ENERGY_PROJECT_S 1.0

/* Clocks (MHz) and temperature (C): SM/graphics rise linearly with util. */
#define FAKE_SM_IDLE_MHZ 345u
#define FAKE_SM_MAX_MHZ 1980u
#define FAKE_VIDEO_IDLE_MHZ 765u
#define FAKE_VIDEO_MAX_MHZ 1755u
#define FAKE_MEM_MHZ 2619u
#define FAKE_TEMP_IDLE_C 32u
#define FAKE_TEMP_RISE_C 45u       /* at 100 % util */
/* State-file fractions (power_frac, sm/tensor/dram activity) are in ppm. */
#define FAKE_PPM 1000000u
/* |extra_mw| and |extra_mj| bounds accepted in energy files. */
#define FAKE_MAX_EXTRA_MW 100000000LL
#define FAKE_MAX_EXTRA_MJ (LLONG_MAX / 1024)
#define FAKE_GPM_MAGIC 0x6670676du   /* "fpgm" */

struct fake_dev {
    unsigned index;                /* NVML index = order of gpu lines */
    unsigned minor;                /* /dev/nvidia<minor> */
    char uuid[FAKE_STR_LEN];
    char name[FAKE_STR_LEN];
    unsigned long long mem_total_mib;
    unsigned power_limit_w;
    int lost;                      /* fault gpu_lost:<minor> */
    int gpm;                       /* GPM supported: name says H100 or H200 */
};
typedef struct fake_dev *nvmlDevice_t;

struct fake_conf {
    char path[FAKE_PATH_LEN];
    char state_dir[FAKE_PATH_LEN];
    char driver_version[FAKE_STR_LEN];
    unsigned idle_w;
    int driver_not_loaded;
    int power_not_supported;
    unsigned lost_minors[FAKE_MAX_GPUS];
    unsigned n_lost;
    unsigned flaky_minors[FAKE_MAX_GPUS];      /* fault flaky:<minor>:<count>[:<code>] */
    unsigned flaky_count[FAKE_MAX_GPUS];
    unsigned flaky_code[FAKE_MAX_GPUS];
    unsigned n_flaky;
    unsigned n;
    struct fake_dev dev[FAKE_MAX_GPUS];
};

/* What a state file says right now (all zero = idle). */
enum { FAKE_ACT_SM, FAKE_ACT_TENSOR, FAKE_ACT_DRAM, FAKE_N_ACT };

struct fake_live {
    unsigned util;
    unsigned mem_util;
    unsigned long long mem_used_mib;
    int process;
    unsigned pid;
    int have_power;                /* power_frac_ppm given: power = limit * ppm */
    unsigned power_ppm;
    int have_act[FAKE_N_ACT];      /* sm/tensor/dram_active_ppm given */
    unsigned act_ppm[FAKE_N_ACT];
};

/* What nvmlGpmSampleGet recorded (a snapshot of the state file). */
struct fake_gpm_sample {
    unsigned magic;                /* FAKE_GPM_MAGIC while allocated */
    int filled;                    /* nvmlGpmSampleGet succeeded into it */
    unsigned dev_index;
    double t;                      /* CLOCK_BOOTTIME seconds */
    int have_act[FAKE_N_ACT];
    unsigned act_ppm[FAKE_N_ACT];
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned g_refcount;                 /* nvmlInit count; atomics + g_lock */
static struct fake_conf g_conf;             /* written only at refcount 0 -> 1 */
static pthread_mutex_t g_energy_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long g_energy_last[FAKE_MAX_GPUS];  /* per-process monotonic clamp */

/* Transient faults, per process and per device (index): how many more
 * per-device queries fail, with which code, and which gpu<M>.flaky file
 * (inode, mtime, size) armed them last, so that a file arms once. */
struct fake_flaky {
    unsigned left;
    nvmlReturn_t code;
    int have_file;
    dev_t dev;
    ino_t ino;
    long long mtime_ns;
    off_t size;
};
static pthread_mutex_t g_flaky_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fake_flaky g_flaky[FAKE_MAX_GPUS];

/* ---- small helpers ---- */

static int initialized(void)
{
    return __atomic_load_n(&g_refcount, __ATOMIC_ACQUIRE) > 0;
}

static char *skip_space(char *s)
{
    while (*s && isspace((unsigned char)*s))
        s++;
    return s;
}

static void rtrim(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

/* Cut a comment: '#' at the start of the line or after whitespace. */
static void cut_comment(char *s)
{
    for (char *p = s; *p; p++) {
        if (*p == '#' && (p == s || isspace((unsigned char)p[-1]))) {
            *p = '\0';
            return;
        }
    }
}

/* Next whitespace-separated token; NUL-terminates it and advances *s. */
static char *next_token(char **s)
{
    char *p = skip_space(*s), *tok;
    if (!*p)
        return NULL;
    tok = p;
    while (*p && !isspace((unsigned char)*p))
        p++;
    if (*p)
        *p++ = '\0';
    *s = p;
    return tok;
}

/* Parse an unsigned decimal with an upper bound; 0 on success. */
static int parse_ull(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    unsigned long long v;
    if (!s || !isdigit((unsigned char)*s))
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Parse a signed decimal with |value| <= maxabs; 0 on success. */
static int parse_ll(const char *s, long long maxabs, long long *out)
{
    unsigned long long v;
    int neg = s && *s == '-';
    if (parse_ull(neg ? s + 1 : s, (unsigned long long)maxabs, &v))
        return -1;
    *out = neg ? -(long long)v : (long long)v;
    return 0;
}

static int parse_uint(const char *s, unsigned max, unsigned *out)
{
    unsigned long long v;
    if (parse_ull(s, max, &v))
        return -1;
    *out = (unsigned)v;
    return 0;
}

/* Copy with truncation check; 0 if it fit. */
static int copy_str(char *dst, size_t size, const char *src)
{
    int n = snprintf(dst, size, "%s", src);
    return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

static double boottime_s(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_BOOTTIME, &ts) != 0 && clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Does `name` hold `model` (case-insensitive) not followed by a letter or
 * digit?  "NVIDIA H100 80GB HBM3" and "NVIDIA GH200 480GB" hold H100/H200;
 * "H1000" would not. */
static int name_has_model(const char *name, const char *model)
{
    size_t n = strlen(model);
    for (const char *p = name; *p; p++) {
        if (strncasecmp(p, model, n) == 0 && !isalnum((unsigned char)p[n]))
            return 1;
    }
    return 0;
}

/* ---- config ---- */

static int conf_error(const char *path, unsigned line, const char *what)
{
    if (line)
        fprintf(stderr, "fakenvml: %s:%u: %s\n", path, line, what);
    else
        fprintf(stderr, "fakenvml: %s: %s\n", path, what);
    return -1;
}

/* An NVML error code a transient fault may return: anything but success. */
static int parse_error_code(const char *s, unsigned *out)
{
    return parse_uint(s, NVML_ERROR_UNKNOWN, out) || *out == NVML_SUCCESS ? -1 : 0;
}

/* "flaky:<minor>:<count>[:<code>]" (the part after "flaky:"); 0 if valid. */
static int parse_flaky(struct fake_conf *c, char *spec)
{
    char *count_s = strchr(spec, ':'), *code_s;
    unsigned minor, count, code = NVML_ERROR_UNKNOWN;
    if (!count_s)
        return -1;
    *count_s++ = '\0';
    code_s = strchr(count_s, ':');
    if (code_s)
        *code_s++ = '\0';
    if (parse_uint(spec, FAKE_MAX_MINOR, &minor) || parse_uint(count_s, 1000000000u, &count) ||
        (code_s && parse_error_code(code_s, &code)))
        return -1;
    if (c->n_flaky < FAKE_MAX_GPUS) {
        c->flaky_minors[c->n_flaky] = minor;
        c->flaky_count[c->n_flaky] = count;
        c->flaky_code[c->n_flaky] = code;
        c->n_flaky++;
    }
    return 0;
}

/* Apply "driver_not_loaded,gpu_lost:3,power_not_supported,flaky:1:3"; 0 if valid. */
static int parse_faults(struct fake_conf *c, const char *spec)
{
    char buf[FAKE_LINE_LEN];
    char *save = NULL, *item;
    if (copy_str(buf, sizeof buf, spec))
        return -1;
    for (item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        unsigned minor;
        item = skip_space(item);
        rtrim(item);
        if (!*item)
            continue;
        if (strcmp(item, "driver_not_loaded") == 0) {
            c->driver_not_loaded = 1;
        } else if (strcmp(item, "power_not_supported") == 0) {
            c->power_not_supported = 1;
        } else if (strncmp(item, "gpu_lost:", 9) == 0 &&
                   parse_uint(item + 9, FAKE_MAX_MINOR, &minor) == 0) {
            if (c->n_lost < FAKE_MAX_GPUS)
                c->lost_minors[c->n_lost++] = minor;
        } else if (strncmp(item, "flaky:", 6) == 0) {
            if (parse_flaky(c, item + 6))
                return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

static int parse_gpu_line(struct fake_conf *c, char *rest, const char *path, unsigned line)
{
    struct fake_dev *d;
    char *minor_s = next_token(&rest), *uuid = next_token(&rest);
    char *mem_s = next_token(&rest), *watts_s = next_token(&rest);
    char *name = skip_space(rest);

    if (!minor_s || !uuid || !mem_s || !watts_s || !*name)
        return conf_error(path, line, "expected: gpu <minor> <uuid> <mem_total_mib> <power_limit_w> <name>");
    if (c->n >= FAKE_MAX_GPUS)
        return conf_error(path, line, "too many gpu lines (at most 64)");
    d = &c->dev[c->n];
    memset(d, 0, sizeof *d);
    d->index = c->n;
    if (parse_uint(minor_s, FAKE_MAX_MINOR, &d->minor))
        return conf_error(path, line, "bad minor number");
    if (copy_str(d->uuid, sizeof d->uuid, uuid))
        return conf_error(path, line, "uuid too long");
    if (parse_ull(mem_s, 1ULL << 30, &d->mem_total_mib) || d->mem_total_mib == 0)
        return conf_error(path, line, "bad mem_total_mib");
    if (parse_uint(watts_s, 100000, &d->power_limit_w) || d->power_limit_w == 0)
        return conf_error(path, line, "bad power_limit_w");
    if (copy_str(d->name, sizeof d->name, name))
        return conf_error(path, line, "name too long (at most 95 bytes)");
    d->gpm = name_has_model(d->name, "H100") || name_has_model(d->name, "H200");
    for (unsigned i = 0; i < c->n; i++) {
        if (c->dev[i].minor == d->minor)
            return conf_error(path, line, "duplicate minor number");
        if (strcmp(c->dev[i].uuid, d->uuid) == 0)
            return conf_error(path, line, "duplicate uuid");
    }
    c->n++;
    return 0;
}

/* Parse the config file into *c; 0 ok, -1 malformed, -2 missing/unreadable. */
static int parse_config(struct fake_conf *c, const char *path)
{
    char buf[FAKE_LINE_LEN];
    unsigned line = 0;
    int have_state_dir = 0, rc = 0;
    FILE *f;

    memset(c, 0, sizeof *c);
    c->idle_w = FAKE_DEFAULT_IDLE_W;
    (void)copy_str(c->driver_version, sizeof c->driver_version, FAKE_DEFAULT_DRIVER);
    if (copy_str(c->path, sizeof c->path, path))
        return -2;
    f = fopen(path, "re");
    if (!f)
        return -2;
    while (rc == 0 && fgets(buf, sizeof buf, f)) {
        char *rest, *key, *arg;
        line++;
        if (!strchr(buf, '\n') && !feof(f)) {
            rc = conf_error(path, line, "line too long");
            break;
        }
        cut_comment(buf);
        rtrim(buf);
        rest = buf;
        key = next_token(&rest);
        if (!key)
            continue;
        arg = skip_space(rest);
        if (strcmp(key, "gpu") == 0) {
            rc = parse_gpu_line(c, arg, path, line);
        } else if (strcmp(key, "state_dir") == 0) {
            if (arg[0] != '/' || copy_str(c->state_dir, sizeof c->state_dir, arg))
                rc = conf_error(path, line, "state_dir must be an absolute path");
            have_state_dir = 1;
        } else if (strcmp(key, "driver_version") == 0) {
            if (!*arg || strchr(arg, ' ') || copy_str(c->driver_version, sizeof c->driver_version, arg))
                rc = conf_error(path, line, "bad driver_version");
        } else if (strcmp(key, "power_idle_w") == 0) {
            if (parse_uint(arg, 100000, &c->idle_w))
                rc = conf_error(path, line, "bad power_idle_w");
        } else if (strcmp(key, "fault") == 0) {
            if (parse_faults(c, arg))
                rc = conf_error(path, line, "bad fault list (driver_not_loaded, gpu_lost:MINOR, "
                                            "power_not_supported, flaky:MINOR:COUNT[:CODE])");
        } else {
            char msg[160];
            snprintf(msg, sizeof msg, "unknown key '%.64s'", key);
            rc = conf_error(path, line, msg);
        }
    }
    if (rc == 0 && ferror(f))
        rc = conf_error(path, 0, "read error");
    fclose(f);
    if (rc == 0 && !have_state_dir)
        rc = conf_error(path, 0, "missing state_dir");
    return rc;
}

/* FAKENVML_CONFIG with each "%n" replaced by SLURMD_NODENAME (as slurm.conf's
 * paths take %n on a host running several slurmd: each node its own GPUs).
 * -1 (with a line on stderr) when %n is used and SLURMD_NODENAME is unset. */
static int expand_node(char *out, size_t size, const char *value)
{
    const char *node = NULL;
    size_t n = 0;

    for (const char *p = value; *p; p++) {
        const char *piece = p;
        size_t len = 1;
        if (p[0] == '%' && p[1] == 'n') {
            if (!node && !(node = getenv("SLURMD_NODENAME"))) {
                fprintf(stderr, "fakenvml: FAKENVML_CONFIG=%s names %%n but SLURMD_NODENAME is unset\n", value);
                return -1;
            }
            piece = node;
            len = strlen(node);
            p++;
        }
        if (n + len >= size)
            return -1;
        memcpy(out + n, piece, len);
        n += len;
    }
    out[n] = '\0';
    return 0;
}

/* FAKENVML_CONFIG, else fakenvml.conf next to this library (as loaded,
 * then after resolving symlinks). 0 if a readable candidate was found. */
static int find_config(char *out, size_t size)
{
    const char *env = getenv("FAKENVML_CONFIG");
    Dl_info info;
    char dir[FAKE_PATH_LEN], *slash;

    if (env && *env)
        return expand_node(out, size, env);
    if (!dladdr(&g_refcount, &info) || !info.dli_fname)
        return -1;
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 0) {
            if (copy_str(dir, sizeof dir, info.dli_fname))
                continue;
        } else {
            char *real = realpath(info.dli_fname, NULL);
            int bad = !real || copy_str(dir, sizeof dir, real);
            free(real);
            if (bad)
                continue;
        }
        slash = strrchr(dir, '/');
        if (slash)
            *slash = '\0';
        else
            (void)copy_str(dir, sizeof dir, ".");
        {
            int n = snprintf(out, size, "%s/fakenvml.conf", dir[0] ? dir : "/");
            if (n > 0 && (size_t)n < size && access(out, R_OK) == 0)
                return 0;
        }
    }
    return -1;
}

/* ---- live state ---- */

/* Alive = /proc/<pid> exists and is not a zombie, and (when the state file
 * recorded it) has the same start time, so a recycled pid reads as dead. */
static int pid_alive(unsigned pid, int have_start, unsigned long long start)
{
    char path[64], buf[1024], *p;
    struct stat st;
    FILE *f;
    size_t n;
    unsigned long long field = 0;

    if (pid == 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%u", pid);
    if (stat(path, &st) != 0)
        return 0;
    snprintf(path, sizeof path, "/proc/%u/stat", pid);
    f = fopen(path, "re");
    if (!f)
        return 1;                  /* exists but unreadable: trust existence */
    n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    p = strrchr(buf, ')');         /* comm may hold spaces and parens */
    if (!p)
        return 1;
    p = skip_space(p + 1);
    if (*p == 'Z' || *p == 'X')
        return 0;
    if (!have_start)
        return 1;
    /* p is at field 3 (state); starttime is field 22. */
    for (int i = 3; i < 22; i++) {
        while (*p && !isspace((unsigned char)*p))
            p++;
        p = skip_space(p);
    }
    if (sscanf(p, "%llu", &field) != 1)
        return 1;
    return field == start;
}

static int state_path(char *out, size_t size, const struct fake_dev *d)
{
    int n = snprintf(out, size, "%s/gpu%u.state", g_conf.state_dir, d->minor);
    return (n < 0 || (size_t)n >= size) ? -1 : 0;
}

/* Read one state file into *out; 1 if it exists, is valid and its pid is
 * alive, else 0 (*out untouched). */
static int read_state_file(const char *path, const struct fake_dev *d, struct fake_live *out)
{
    char buf[256];
    struct fake_live v;
    unsigned long long start = 0;
    int have_pid = 0, have_start = 0, bad = 0;
    FILE *f;

    memset(&v, 0, sizeof v);
    f = fopen(path, "re");
    if (!f)
        return 0;
    while (!bad && fgets(buf, sizeof buf, f)) {
        char *rest = buf, *key, *val;
        unsigned long long x;
        if (!strchr(buf, '\n') && !feof(f)) {
            bad = 1;
            break;
        }
        cut_comment(buf);
        key = next_token(&rest);
        if (!key)
            continue;
        val = next_token(&rest);
        if (!val || next_token(&rest) || parse_ull(val, ULLONG_MAX, &x)) {
            bad = 1;
            break;
        }
        if (strcmp(key, "pid") == 0) {
            bad = x == 0 || x > INT_MAX;
            v.pid = (unsigned)x;
            have_pid = 1;
        } else if (strcmp(key, "start") == 0) {
            start = x;
            have_start = 1;
        } else if (strcmp(key, "util") == 0) {
            bad = x > 100;
            v.util = (unsigned)x;
        } else if (strcmp(key, "mem_util") == 0) {
            bad = x > 100;
            v.mem_util = (unsigned)x;
        } else if (strcmp(key, "mem_used_mib") == 0) {
            v.mem_used_mib = x;
        } else if (strcmp(key, "process") == 0) {
            bad = x > 1;
            v.process = (int)x;
        } else if (strcmp(key, "power_frac_ppm") == 0) {
            bad = x > FAKE_PPM;
            v.power_ppm = (unsigned)x;
            v.have_power = 1;
        } else {
            static const char *const act_keys[FAKE_N_ACT] = {
                "sm_active_ppm", "tensor_active_ppm", "dram_active_ppm"};
            for (int k = 0; k < FAKE_N_ACT; k++) {
                if (strcmp(key, act_keys[k]) == 0) {
                    bad = x > FAKE_PPM;
                    v.act_ppm[k] = (unsigned)x;
                    v.have_act[k] = 1;
                }
            }
        }                          /* unknown keys: ignored (forward compatible) */
    }
    if (ferror(f))
        bad = 1;
    fclose(f);
    if (bad || !have_pid || !pid_alive(v.pid, have_start, start))
        return 0;
    if (v.mem_used_mib > d->mem_total_mib)
        v.mem_used_mib = d->mem_total_mib;
    *out = v;
    return 1;
}

/* 1 when `name` is `<prefix><digits>`: a per-uid state or energy file (FAKE-GPU.md). */
static int is_per_uid_name(const char *name, const char *prefix, size_t plen)
{
    const char *p = name;
    if (strncmp(p, prefix, plen) != 0 || !p[plen])
        return 0;
    for (p += plen; *p && isdigit((unsigned char)*p); p++)
        ;
    return *p == '\0';
}

/* The live load of a device: <state_dir>/gpu<minor>.state, else (it is
 * missing, stale or bad) the first live gpu<minor>.state.<uid>: what
 * fakegpu-work publishes when a stale gpu<minor>.state of another user
 * cannot be replaced in the sticky state dir.  Anything wrong reads as idle. */
static void read_live(const struct fake_dev *d, struct fake_live *out)
{
    char path[FAKE_PATH_LEN + 300], prefix[40];
    size_t plen;
    DIR *dir;
    struct dirent *e;

    memset(out, 0, sizeof *out);
    if (state_path(path, sizeof path, d) || read_state_file(path, d, out) == 1)
        return;
    snprintf(prefix, sizeof prefix, "gpu%u.state.", d->minor);
    plen = strlen(prefix);
    dir = opendir(g_conf.state_dir);
    if (!dir)
        return;
    while ((e = readdir(dir)) != NULL) {
        if (!is_per_uid_name(e->d_name, prefix, plen))
            continue;              /* not gpu<minor>.state.<digits> */
        if (snprintf(path, sizeof path, "%s/%s", g_conf.state_dir, e->d_name) < (int)sizeof path &&
                read_state_file(path, d, out) == 1)
            break;
    }
    closedir(dir);
}

static unsigned idle_mw(const struct fake_dev *d)
{
    unsigned idle = g_conf.idle_w < d->power_limit_w ? g_conf.idle_w : d->power_limit_w;
    return idle * 1000u;
}

/* Power (mW): power_frac of the limit when the load set it, else idle plus
 * util percent of the range up to the limit.  fakegpu-work's extra_mw()
 * uses the same integer arithmetic. */
static unsigned power_mw(const struct fake_dev *d, const struct fake_live *v)
{
    unsigned long long idle = idle_mw(d), limit = (unsigned long long)d->power_limit_w * 1000u;
    if (v->have_power)
        return (unsigned)(limit * v->power_ppm / FAKE_PPM);
    return (unsigned)(idle + (limit - idle) * v->util / 100u);
}

/* Parse one gpu<minor>.energy.<uid> file and return its extra energy (mJ)
 * at time now: extra_mj + extra_mw * clamp(now - stamp, 0, 1 s).  Both may
 * be negative: a load whose power_frac is below idle power draws less than
 * idle, so its "extra" energy shrinks (the total still grows). */
static long long energy_file_mj(const char *path, double now)
{
    char buf[256];
    long long extra_mj = 0, extra_mw = 0;
    double stamp = now, dt;
    FILE *f = fopen(path, "re");

    if (!f)
        return 0;
    while (fgets(buf, sizeof buf, f)) {
        char *rest = buf, *key, *val, *end;
        cut_comment(buf);
        key = next_token(&rest);
        val = key ? next_token(&rest) : NULL;
        if (!key || !val)
            continue;
        if (strcmp(key, "extra_mj") == 0) {
            if (parse_ll(val, FAKE_MAX_EXTRA_MJ, &extra_mj))
                extra_mj = 0;
        } else if (strcmp(key, "extra_mw") == 0) {
            if (parse_ll(val, FAKE_MAX_EXTRA_MW, &extra_mw))
                extra_mw = 0;
        } else if (strcmp(key, "stamp") == 0) {
            errno = 0;
            stamp = strtod(val, &end);
            if (errno || *end || stamp != stamp)
                stamp = now;
        }
    }
    fclose(f);
    dt = now - stamp;
    if (dt < 0)
        dt = 0;
    if (dt > FAKE_ENERGY_PROJECT_S)
        dt = FAKE_ENERGY_PROJECT_S;
    return extra_mj + (long long)((double)extra_mw * dt);
}

/* Energy (mJ) = idle power integrated over CLOCK_BOOTTIME + the extra
 * energy recorded by workloads in <state_dir>/gpu<minor>.energy.<uid>. */
static unsigned long long energy_mj(const struct fake_dev *d)
{
    double now = boottime_s();
    long long extra = 0;
    unsigned long long total = (unsigned long long)((double)idle_mw(d) * now);
    char prefix[32], path[FAKE_PATH_LEN + 300];
    size_t plen;
    DIR *dir;
    struct dirent *e;

    snprintf(prefix, sizeof prefix, "gpu%u.energy.", d->minor);
    plen = strlen(prefix);
    dir = opendir(g_conf.state_dir);
    if (dir) {
        while ((e = readdir(dir)) != NULL) {
            if (!is_per_uid_name(e->d_name, prefix, plen))
                continue;          /* not gpu<minor>.energy.<digits> */
            snprintf(path, sizeof path, "%s/%s", g_conf.state_dir, e->d_name);
            extra += energy_file_mj(path, now);
        }
        closedir(dir);
    }
    if (extra < 0)
        total = (unsigned long long)-extra > total ? 0 : total - (unsigned long long)-extra;
    else
        total += (unsigned long long)extra;
    pthread_mutex_lock(&g_energy_lock);
    if (total < g_energy_last[d->index])
        total = g_energy_last[d->index];
    g_energy_last[d->index] = total;
    pthread_mutex_unlock(&g_energy_lock);
    return total;
}

/* ---- entry-point plumbing ---- */

/* Transient fault of device index i: a new (or rewritten) <state_dir>/gpu<MINOR>.flaky
 * holding "COUNT [CODE]" arms COUNT failures with CODE (default NVML_ERROR_UNKNOWN)
 * in this process, as the fault switch flaky:MINOR:COUNT[:CODE] does at nvmlInit;
 * each per-device query then takes one.  Returns the code to fail with, or
 * NVML_SUCCESS.  A file that cannot be parsed arms nothing. */
static nvmlReturn_t flaky_check(size_t i)
{
    char path[FAKE_PATH_LEN + 32];
    struct stat st;
    struct fake_flaky *f = &g_flaky[i];
    nvmlReturn_t r = NVML_SUCCESS;

    pthread_mutex_lock(&g_flaky_lock);
    if (snprintf(path, sizeof path, "%s/gpu%u.flaky", g_conf.state_dir, g_conf.dev[i].minor)
            < (int)sizeof path && stat(path, &st) == 0) {
        long long mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
        if (!f->have_file || f->dev != st.st_dev || f->ino != st.st_ino || f->mtime_ns != mtime_ns ||
                f->size != st.st_size) {
            char buf[128], *rest = buf, *count_s, *code_s;
            unsigned count, code = NVML_ERROR_UNKNOWN;
            FILE *fp = fopen(path, "re");
            f->have_file = 1;
            f->dev = st.st_dev;
            f->ino = st.st_ino;
            f->mtime_ns = mtime_ns;
            f->size = st.st_size;
            if (fp) {
                if (fgets(buf, sizeof buf, fp)) {
                    cut_comment(buf);
                    count_s = next_token(&rest);
                    code_s = count_s ? next_token(&rest) : NULL;
                    if (count_s && !next_token(&rest) && parse_uint(count_s, 1000000000u, &count) == 0 &&
                            (!code_s || parse_error_code(code_s, &code) == 0)) {
                        f->left = count;
                        f->code = (nvmlReturn_t)code;
                    }
                }
                fclose(fp);
            }
        }
    }
    if (f->left > 0) {
        f->left--;
        r = f->code;
    }
    pthread_mutex_unlock(&g_flaky_lock);
    return r;
}

/* Validate a handle: initialized, points at a configured device, not lost. */
static nvmlReturn_t dev_check(nvmlDevice_t device, const struct fake_dev **out)
{
    uintptr_t base = (uintptr_t)&g_conf.dev[0], p = (uintptr_t)device;
    size_t i;

    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    if (!device || p < base || (p - base) % sizeof(struct fake_dev) != 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    i = (p - base) / sizeof(struct fake_dev);
    if (i >= g_conf.n)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (g_conf.dev[i].lost)
        return NVML_ERROR_GPU_IS_LOST;
    {   /* live fault: <state_dir>/gpu<MINOR>.lost makes the GPU fall off the bus now */
        char lost[FAKE_PATH_LEN + 32];
        if (snprintf(lost, sizeof lost, "%s/gpu%u.lost", g_conf.state_dir, g_conf.dev[i].minor)
                < (int)sizeof lost && access(lost, F_OK) == 0)
            return NVML_ERROR_GPU_IS_LOST;
    }
    {
        nvmlReturn_t r = flaky_check(i);
        if (r)
            return r;
    }
    *out = &g_conf.dev[i];
    return NVML_SUCCESS;
}

static nvmlReturn_t put_string(char *dst, unsigned length, const char *src)
{
    if (!dst)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(src) + 1 > length)
        return NVML_ERROR_INSUFFICIENT_SIZE;
    memcpy(dst, src, strlen(src) + 1);
    return NVML_SUCCESS;
}

/* ---- init / shutdown / errors ---- */

NVML_API nvmlReturn_t nvmlInitWithFlags(unsigned int flags)
{
    nvmlReturn_t ret = NVML_SUCCESS;
    (void)flags;
    pthread_mutex_lock(&g_lock);
    if (g_refcount == 0) {
        char path[FAKE_PATH_LEN];
        const char *env_fault = getenv("FAKENVML_FAULT");
        int rc = find_config(path, sizeof path) ? -2 : parse_config(&g_conf, path);
        if (rc == -2) {
            ret = NVML_ERROR_DRIVER_NOT_LOADED;
        } else if (rc != 0) {
            ret = NVML_ERROR_UNKNOWN;
        } else if (env_fault && parse_faults(&g_conf, env_fault)) {
            fprintf(stderr, "fakenvml: FAKENVML_FAULT: bad fault list '%.200s'\n", env_fault);
            ret = NVML_ERROR_UNKNOWN;
        } else if (g_conf.driver_not_loaded) {
            ret = NVML_ERROR_DRIVER_NOT_LOADED;
        } else {
            for (unsigned i = 0; i < g_conf.n; i++)
                for (unsigned j = 0; j < g_conf.n_lost; j++)
                    if (g_conf.dev[i].minor == g_conf.lost_minors[j])
                        g_conf.dev[i].lost = 1;
            pthread_mutex_lock(&g_flaky_lock);
            memset(g_flaky, 0, sizeof g_flaky);
            for (unsigned i = 0; i < g_conf.n; i++)
                for (unsigned j = 0; j < g_conf.n_flaky; j++)
                    if (g_conf.dev[i].minor == g_conf.flaky_minors[j]) {
                        g_flaky[i].left = g_conf.flaky_count[j];
                        g_flaky[i].code = (nvmlReturn_t)g_conf.flaky_code[j];
                    }
            pthread_mutex_unlock(&g_flaky_lock);
        }
    }
    if (ret == NVML_SUCCESS)
        __atomic_add_fetch(&g_refcount, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_lock);
    return ret;
}

NVML_API nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
NVML_API nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

NVML_API nvmlReturn_t nvmlShutdown(void)
{
    nvmlReturn_t ret = NVML_SUCCESS;
    pthread_mutex_lock(&g_lock);
    if (g_refcount == 0)
        ret = NVML_ERROR_UNINITIALIZED;
    else
        __atomic_sub_fetch(&g_refcount, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&g_lock);
    return ret;
}

NVML_API const char *nvmlErrorString(nvmlReturn_t result)
{
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NO_PERMISSION: return "Insufficient Permissions";
    case NVML_ERROR_ALREADY_INITIALIZED: return "Already Initialized";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_INSUFFICIENT_POWER: return "Insufficient External Power";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_TIMEOUT: return "Timeout";
    case NVML_ERROR_IRQ_ISSUE: return "Interrupt Request Issue";
    case NVML_ERROR_LIBRARY_NOT_FOUND: return "NVML Shared Library Not Found";
    case NVML_ERROR_FUNCTION_NOT_FOUND: return "Function Not Found";
    case NVML_ERROR_CORRUPTED_INFOROM: return "Corrupted infoROM";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    case NVML_ERROR_RESET_REQUIRED: return "GPU requires restart";
    case NVML_ERROR_OPERATING_SYSTEM: return "The operating system has blocked the request.";
    case NVML_ERROR_LIB_RM_VERSION_MISMATCH: return "RM has detected an NVML/RM version mismatch.";
    case NVML_ERROR_IN_USE: return "In use by another client";
    case NVML_ERROR_MEMORY: return "Insufficient Memory";
    case NVML_ERROR_NO_DATA: return "No data";
    case NVML_ERROR_VGPU_ECC_NOT_SUPPORTED: return "The requested vgpu operation is not available on target device, because ECC is enabled";
    case NVML_ERROR_INSUFFICIENT_RESOURCES: return "Ran out of critical resources, other than memory";
    case NVML_ERROR_FREQ_NOT_SUPPORTED: return "Frequency not supported";
    case NVML_ERROR_ARGUMENT_VERSION_MISMATCH: return "Argument version mismatch";
    case NVML_ERROR_DEPRECATED: return "Deprecated";
    case NVML_ERROR_NOT_READY: return "Not ready";
    case NVML_ERROR_GPU_NOT_FOUND: return "GPU not found";
    case NVML_ERROR_INVALID_STATE: return "Invalid state";
    case NVML_ERROR_RESET_TYPE_NOT_SUPPORTED: return "Reset type not supported";
    default: return "Unknown Error";
    }
}

/* ---- system queries ---- */

NVML_API nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length)
{
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    return put_string(version, length, g_conf.driver_version);
}

NVML_API nvmlReturn_t nvmlSystemGetNVMLVersion(char *version, unsigned int length)
{
    char buf[FAKE_STR_LEN + 8];
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    snprintf(buf, sizeof buf, "12.%s", g_conf.driver_version);
    return put_string(version, length, buf);
}

NVML_API nvmlReturn_t nvmlSystemGetCudaDriverVersion(int *cudaDriverVersion)
{
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    if (!cudaDriverVersion)
        return NVML_ERROR_INVALID_ARGUMENT;
    *cudaDriverVersion = FAKE_CUDA_DRIVER_VERSION;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlSystemGetCudaDriverVersion_v2(int *cudaDriverVersion)
{
    return nvmlSystemGetCudaDriverVersion(cudaDriverVersion);
}

/* ---- device enumeration ---- */

NVML_API nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *deviceCount)
{
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    if (!deviceCount)
        return NVML_ERROR_INVALID_ARGUMENT;
    *deviceCount = g_conf.n;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetCount(unsigned int *deviceCount)
{
    return nvmlDeviceGetCount_v2(deviceCount);
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device)
{
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    if (!device || index >= g_conf.n)
        return NVML_ERROR_INVALID_ARGUMENT;
    *device = &g_conf.dev[index];
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByIndex(unsigned int index, nvmlDevice_t *device)
{
    return nvmlDeviceGetHandleByIndex_v2(index, device);
}

NVML_API nvmlReturn_t nvmlDeviceGetHandleByUUID(const char *uuid, nvmlDevice_t *device)
{
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    if (!uuid || !device)
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < g_conf.n; i++) {
        if (strcmp(g_conf.dev[i].uuid, uuid) == 0) {
            *device = &g_conf.dev[i];
            return NVML_SUCCESS;
        }
    }
    return NVML_ERROR_NOT_FOUND;
}

/* ---- static per-device facts ---- */

NVML_API nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t device, unsigned int *index)
{
    const struct fake_dev *d;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    if (!index)
        return NVML_ERROR_INVALID_ARGUMENT;
    *index = d->index;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t device, unsigned int *minorNumber)
{
    const struct fake_dev *d;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    if (!minorNumber)
        return NVML_ERROR_INVALID_ARGUMENT;
    *minorNumber = d->minor;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t device, char *name, unsigned int length)
{
    const struct fake_dev *d;
    nvmlReturn_t r = dev_check(device, &d);
    return r ? r : put_string(name, length, d->name);
}

NVML_API nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t device, char *uuid, unsigned int length)
{
    const struct fake_dev *d;
    nvmlReturn_t r = dev_check(device, &d);
    return r ? r : put_string(uuid, length, d->uuid);
}

NVML_API nvmlReturn_t nvmlDeviceGetPowerManagementLimit(nvmlDevice_t device, unsigned int *limit)
{
    const struct fake_dev *d;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    if (!limit)
        return NVML_ERROR_INVALID_ARGUMENT;
    *limit = d->power_limit_w * 1000u;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetEnforcedPowerLimit(nvmlDevice_t device, unsigned int *limit)
{
    return nvmlDeviceGetPowerManagementLimit(device, limit);
}

/* ---- live per-device readings ---- */

NVML_API nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t device, nvmlUtilization_t *utilization)
{
    const struct fake_dev *d;
    struct fake_live v;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    if (!utilization)
        return NVML_ERROR_INVALID_ARGUMENT;
    read_live(d, &v);
    utilization->gpu = v.util;
    utilization->memory = v.mem_util;
    return NVML_SUCCESS;
}

static nvmlReturn_t memory_of(nvmlDevice_t device, unsigned long long *total,
                              unsigned long long *used)
{
    const struct fake_dev *d;
    struct fake_live v;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    read_live(d, &v);
    *total = d->mem_total_mib << 20;
    *used = v.mem_used_mib << 20;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t device, nvmlMemory_t *memory)
{
    unsigned long long total, used;
    nvmlReturn_t r;
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    r = memory_of(device, &total, &used);
    if (r)
        return r;
    memory->total = total;
    memory->used = used;
    memory->free = total - used;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t device, nvmlMemory_v2_t *memory)
{
    unsigned long long total, used;
    nvmlReturn_t r;
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    if (!memory)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != nvmlMemory_v2)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    r = memory_of(device, &total, &used);
    if (r)
        return r;
    memory->total = total;
    memory->reserved = 0;
    memory->used = used;
    memory->free = total - used;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t device, unsigned int *power)
{
    const struct fake_dev *d;
    struct fake_live v;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    if (!power)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (g_conf.power_not_supported)
        return NVML_ERROR_NOT_SUPPORTED;
    read_live(d, &v);
    *power = power_mw(d, &v);
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t device, unsigned long long *energy)
{
    const struct fake_dev *d;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    if (!energy)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (g_conf.power_not_supported)
        return NVML_ERROR_NOT_SUPPORTED;
    *energy = energy_mj(d);
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t device, unsigned int type, unsigned int *clock)
{
    const struct fake_dev *d;
    struct fake_live v;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    if (!clock)
        return NVML_ERROR_INVALID_ARGUMENT;
    read_live(d, &v);
    switch (type) {
    case NVML_CLOCK_GRAPHICS:
    case NVML_CLOCK_SM:
        *clock = FAKE_SM_IDLE_MHZ + (FAKE_SM_MAX_MHZ - FAKE_SM_IDLE_MHZ) * v.util / 100u;
        return NVML_SUCCESS;
    case NVML_CLOCK_MEM:
        *clock = FAKE_MEM_MHZ;
        return NVML_SUCCESS;
    case NVML_CLOCK_VIDEO:
        *clock = FAKE_VIDEO_IDLE_MHZ + (FAKE_VIDEO_MAX_MHZ - FAKE_VIDEO_IDLE_MHZ) * v.util / 100u;
        return NVML_SUCCESS;
    default:
        return NVML_ERROR_INVALID_ARGUMENT;
    }
}

static nvmlReturn_t temperature_of(nvmlDevice_t device, unsigned int sensor, unsigned *temp)
{
    const struct fake_dev *d;
    struct fake_live v;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    if (sensor != NVML_TEMPERATURE_GPU)
        return NVML_ERROR_INVALID_ARGUMENT;
    read_live(d, &v);
    *temp = FAKE_TEMP_IDLE_C + FAKE_TEMP_RISE_C * v.util / 100u;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t device, unsigned int sensorType, unsigned int *temp)
{
    if (initialized() && !temp)
        return NVML_ERROR_INVALID_ARGUMENT;
    return temperature_of(device, sensorType, temp);
}

NVML_API nvmlReturn_t nvmlDeviceGetTemperatureV(nvmlDevice_t device, nvmlTemperature_v1_t *temperature)
{
    unsigned t = 0;
    nvmlReturn_t r;
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    if (!temperature)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (temperature->version != nvmlTemperature_v1)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    r = temperature_of(device, temperature->sensorType, &t);
    if (r)
        return r;
    temperature->temperature = (int)t;
    return NVML_SUCCESS;
}

/* ---- running processes ---- */

/* Shared logic of the process queries: NVML's two-call protocol.  With
 * *count too small (pynvml first passes 0 and NULL) it stores the needed
 * count and returns INSUFFICIENT_SIZE; zero processes is SUCCESS. */
static nvmlReturn_t processes_of(nvmlDevice_t device, unsigned int *count, int want,
                                 const struct fake_dev **dev, struct fake_live *live)
{
    nvmlReturn_t r = dev_check(device, dev);
    unsigned needed;
    if (r)
        return r;
    if (!count)
        return NVML_ERROR_INVALID_ARGUMENT;
    memset(live, 0, sizeof *live);
    if (want)
        read_live(*dev, live);
    needed = (live->process && live->pid) ? 1u : 0u;
    if (*count < needed) {
        *count = needed;
        return NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = needed;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                              nvmlProcessInfo_t *infos)
{
    const struct fake_dev *d;
    struct fake_live v;
    unsigned room = infoCount ? *infoCount : 0;
    nvmlReturn_t r = processes_of(device, infoCount, 1, &d, &v);
    if (r || *infoCount == 0)
        return r;
    if (!infos || room == 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    infos[0].pid = v.pid;
    infos[0].usedGpuMemory = v.mem_used_mib << 20;
    infos[0].gpuInstanceId = NVML_VALUE_NOT_AVAILABLE_UINT;      /* MIG off */
    infos[0].computeInstanceId = NVML_VALUE_NOT_AVAILABLE_UINT;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount,
                                                              nvmlProcessInfo_t *infos)
{
    return nvmlDeviceGetComputeRunningProcesses_v3(device, infoCount, infos);
}

NVML_API nvmlReturn_t nvmlDeviceGetComputeRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                           nvmlProcessInfo_v1_t *infos)
{
    const struct fake_dev *d;
    struct fake_live v;
    unsigned room = infoCount ? *infoCount : 0;
    nvmlReturn_t r = processes_of(device, infoCount, 1, &d, &v);
    if (r || *infoCount == 0)
        return r;
    if (!infos || room == 0)
        return NVML_ERROR_INVALID_ARGUMENT;
    infos[0].pid = v.pid;
    infos[0].usedGpuMemory = v.mem_used_mib << 20;
    return NVML_SUCCESS;
}

/* The fake workload is compute only: graphics process lists are empty. */
NVML_API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(nvmlDevice_t device, unsigned int *infoCount,
                                                               nvmlProcessInfo_t *infos)
{
    const struct fake_dev *d;
    struct fake_live v;
    (void)infos;
    return processes_of(device, infoCount, 0, &d, &v);
}

NVML_API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v2(nvmlDevice_t device, unsigned int *infoCount,
                                                               nvmlProcessInfo_t *infos)
{
    return nvmlDeviceGetGraphicsRunningProcesses_v3(device, infoCount, infos);
}

NVML_API nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses(nvmlDevice_t device, unsigned int *infoCount,
                                                            nvmlProcessInfo_v1_t *infos)
{
    const struct fake_dev *d;
    struct fake_live v;
    (void)infos;
    return processes_of(device, infoCount, 0, &d, &v);
}

/* ---- GPM (GPU Performance Monitoring) ----
 *
 * Only GPUs whose name says H100 or H200 support GPM.  A sample snapshots
 * the sm/tensor/dram activity the state file gives (fakegpu-work's
 * sm_active, tensor_active, dram_active); a metric between two samples is
 * their mean, as a percent.  A metric the load did not set (in either
 * sample) is "not measured": its nvmlReturn is NVML_ERROR_NOT_SUPPORTED,
 * never 0.  SM_OCCUPANCY and every other metric id are likewise
 * NOT_SUPPORTED: the load vocabulary has nothing to derive them from. */

static struct fake_gpm_sample *gpm_sample_of(nvmlGpmSample_t sample)
{
    return (sample && sample->magic == FAKE_GPM_MAGIC) ? sample : NULL;
}

NVML_API nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t device, nvmlGpmSupport_t *gpmSupport)
{
    const struct fake_dev *d;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    if (!gpmSupport)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (gpmSupport->version != NVML_GPM_SUPPORT_VERSION)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    gpmSupport->isSupportedDevice = d->gpm ? 1u : 0u;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *gpmSample)
{
    struct fake_gpm_sample *s;
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    if (!gpmSample)
        return NVML_ERROR_INVALID_ARGUMENT;
    s = calloc(1, sizeof *s);
    if (!s)
        return NVML_ERROR_MEMORY;
    s->magic = FAKE_GPM_MAGIC;
    *gpmSample = s;
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t gpmSample)
{
    struct fake_gpm_sample *s = gpm_sample_of(gpmSample);
    if (!s)
        return NVML_ERROR_INVALID_ARGUMENT;
    s->magic = 0;
    free(s);
    return NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t device, nvmlGpmSample_t gpmSample)
{
    const struct fake_dev *d;
    struct fake_gpm_sample *s;
    struct fake_live v;
    nvmlReturn_t r = dev_check(device, &d);
    if (r)
        return r;
    s = gpm_sample_of(gpmSample);
    if (!s)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (!d->gpm)
        return NVML_ERROR_NOT_SUPPORTED;
    read_live(d, &v);
    s->dev_index = d->index;
    s->t = boottime_s();
    for (int k = 0; k < FAKE_N_ACT; k++) {
        s->have_act[k] = v.have_act[k];
        s->act_ppm[k] = v.act_ppm[k];
    }
    s->filled = 1;
    return NVML_SUCCESS;
}

static void gpm_metric(nvmlGpmMetric_t *m, const struct fake_gpm_sample *a,
                       const struct fake_gpm_sample *b)
{
    int act = -1;
    m->value = 0.0;
    m->metricInfo.shortName = m->metricInfo.longName = m->metricInfo.unit = NULL;
    switch (m->metricId) {
    case NVML_GPM_METRIC_SM_UTIL:
        act = FAKE_ACT_SM;
        m->metricInfo.shortName = (char *)"SM_UTIL";
        m->metricInfo.longName = (char *)"SM utilization";
        break;
    case NVML_GPM_METRIC_ANY_TENSOR_UTIL:
        act = FAKE_ACT_TENSOR;
        m->metricInfo.shortName = (char *)"ANY_TENSOR_UTIL";
        m->metricInfo.longName = (char *)"Any tensor utilization";
        break;
    case NVML_GPM_METRIC_DRAM_BW_UTIL:
        act = FAKE_ACT_DRAM;
        m->metricInfo.shortName = (char *)"DRAM_BW_UTIL";
        m->metricInfo.longName = (char *)"DRAM bandwidth utilization";
        break;
    default:
        break;
    }
    if (m->metricId == 0 || m->metricId >= FAKE_GPM_METRIC_MAX) {
        m->nvmlReturn = NVML_ERROR_INVALID_ARGUMENT;
        return;
    }
    if (act < 0 || !a->have_act[act] || !b->have_act[act]) {
        m->nvmlReturn = NVML_ERROR_NOT_SUPPORTED;   /* not measured */
        return;
    }
    m->metricInfo.unit = (char *)"%";
    m->value = ((double)a->act_ppm[act] + (double)b->act_ppm[act]) / 2.0 / (FAKE_PPM / 100u);
    m->nvmlReturn = NVML_SUCCESS;
}

NVML_API nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *metricsGet)
{
    const struct fake_gpm_sample *a, *b;
    if (!initialized())
        return NVML_ERROR_UNINITIALIZED;
    if (!metricsGet)
        return NVML_ERROR_INVALID_ARGUMENT;
    if (metricsGet->version != NVML_GPM_METRICS_GET_VERSION)
        return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    a = gpm_sample_of(metricsGet->sample1);
    b = gpm_sample_of(metricsGet->sample2);
    if (metricsGet->numMetrics == 0 || metricsGet->numMetrics > FAKE_GPM_METRIC_MAX ||
        !a || !b || a == b || !a->filled || !b->filled || a->dev_index != b->dev_index ||
        !(b->t > a->t))
        return NVML_ERROR_INVALID_ARGUMENT;
    for (unsigned i = 0; i < metricsGet->numMetrics; i++)
        gpm_metric(&metricsGet->metrics[i], a, b);
    return NVML_SUCCESS;
}
