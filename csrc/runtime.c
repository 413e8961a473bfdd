/* runtime.c - thread count, kernel family selection, errors, probes. */
#include "internal.h"

#include <time.h>

static int g_threads;    /* 0: not yet set */
static int g_isa = -1;   /* -1: not yet chosen */
static int g_prec = -1;  /* -1: not yet chosen (GOSD_PRECISION, else f32) */

int sdi_fail(char *msg, int msglen, int status, const char *fmt, ...)
{
	if (msg && msglen > 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(msg, (size_t)msglen, fmt, ap);
		va_end(ap);
	}
	return status;
}

static int64_t g_work_ns;

int64_t sdi_work_begin(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void sdi_work_end(int64_t t0) { __atomic_add_fetch(&g_work_ns, sdi_work_begin() - t0, __ATOMIC_RELAXED); }

int64_t sd_cpu_work_ns(void) { return __atomic_load_n(&g_work_ns, __ATOMIC_RELAXED); }

void *sdi_alloc(size_t bytes)
{
	void *p = NULL;
	if (bytes == 0)
		bytes = 64;
	if (posix_memalign(&p, 64, (bytes + 63) & ~(size_t)63) != 0)
		return NULL;
	return p;
}

#include <pthread.h>

#define SDI_SLOTS 6

typedef struct {
	void *p[SDI_SLOTS];
	size_t n[SDI_SLOTS];
} scratch_set;

static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;

static void scratch_free(void *v)
{
	scratch_set *s = v;
	for (int i = 0; i < SDI_SLOTS; i++)
		free(s->p[i]);
	free(s);
}

static void scratch_init(void) { pthread_key_create(&g_scratch_key, scratch_free); }

void *sdi_scratch(int slot, size_t bytes)
{
	if (slot < 0 || slot >= SDI_SLOTS)
		return NULL;
	pthread_once(&g_scratch_once, scratch_init);
	scratch_set *s = pthread_getspecific(g_scratch_key);
	if (!s) {
		s = calloc(1, sizeof *s);
		if (!s || pthread_setspecific(g_scratch_key, s) != 0) {
			free(s);
			return NULL;
		}
	}
	if (s->n[slot] < bytes) {
		free(s->p[slot]);
		s->p[slot] = sdi_alloc(bytes);
		s->n[slot] = s->p[slot] ? bytes : 0;
	}
	return s->p[slot];
}

int sdi_dtype_ok(int dt) { return dt == SD_F32 || dt == SD_F16 || dt == SD_BF16; }

float *sdi_vec_f32(const void *p, int dt, int64_t n)
{
	if (!p)
		return NULL;
	float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	if (!v)
		return NULL;
	for (int64_t i = 0; i < n; i++)
		v[i] = sdi_load(p, dt, i);
	return v;
}

static int ncpus(void)
{
#ifdef _OPENMP
	return omp_get_num_procs();
#else
	return 1;
#endif
}

int sd_cpu_set_threads(int n)
{
	if (n <= 0)
		n = ncpus();
	__atomic_store_n(&g_threads, n, __ATOMIC_RELAXED);
	return SD_OK;
}

int sd_cpu_threads(void) { return sdi_threads(); }

int sdi_threads(void)
{
	int n = __atomic_load_n(&g_threads, __ATOMIC_RELAXED);
	if (n <= 0) {
		n = ncpus();
		__atomic_store_n(&g_threads, n, __ATOMIC_RELAXED);
	}
	return n;
}

int sd_cpu_has_avx512(void)
{
	__builtin_cpu_init();
	return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
	       __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
	       __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

static int default_isa(void)
{
	const char *env = getenv("GOSD_CPU");
	if (env && strcmp(env, "portable") == 0)
		return SD_ISA_PORTABLE;
	return sd_cpu_has_avx512() ? SD_ISA_AVX512 : SD_ISA_PORTABLE;
}

int sdi_isa(void)
{
	int isa = __atomic_load_n(&g_isa, __ATOMIC_RELAXED);
	if (isa < 0) {
		isa = default_isa();
		__atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
	}
	return isa;
}

int sd_cpu_isa(void) { return sdi_isa(); }

int sd_cpu_set_isa(int isa, char *msg, int msglen)
{
	if (isa < 0)
		isa = default_isa();
	if (isa != SD_ISA_PORTABLE && isa != SD_ISA_AVX512)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "unknown kernel family %d", isa);
	if (isa == SD_ISA_AVX512 && !sd_cpu_has_avx512())
		return sdi_fail(msg, msglen, SD_ERR_ARG, "this CPU lacks AVX-512");
	__atomic_store_n(&g_isa, isa, __ATOMIC_RELAXED);
	return SD_OK;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* 8 dependent adds per iteration: one add per cycle on every x86 core. */
static uint64_t add_chain(uint64_t iters, uint64_t x)
{
	for (uint64_t i = 0; i < iters; i++) {
		__asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
				 "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0"
				 : "+r"(x));
	}
	return x;
}

#include <immintrin.h>

/* 12 independent FMA chains of 16 lanes: enough to cover FMA latency. */
SDI_AVX512 static double fma_loop(uint64_t iters)
{
	/* Distinct starting values, so that no two chains are the same expression. */
	__m512 a0 = _mm512_set1_ps(1.0f), a1 = _mm512_set1_ps(1.1f), a2 = _mm512_set1_ps(1.2f);
	__m512 a3 = _mm512_set1_ps(1.3f), a4 = _mm512_set1_ps(1.4f), a5 = _mm512_set1_ps(1.5f);
	__m512 a6 = _mm512_set1_ps(1.6f), a7 = _mm512_set1_ps(1.7f), a8 = _mm512_set1_ps(1.8f);
	__m512 a9 = _mm512_set1_ps(1.9f), a10 = _mm512_set1_ps(2.0f), a11 = _mm512_set1_ps(2.1f);
	__m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
	for (uint64_t i = 0; i < iters; i++) {
		a0 = _mm512_fmadd_ps(a0, m, c);
		a1 = _mm512_fmadd_ps(a1, m, c);
		a2 = _mm512_fmadd_ps(a2, m, c);
		a3 = _mm512_fmadd_ps(a3, m, c);
		a4 = _mm512_fmadd_ps(a4, m, c);
		a5 = _mm512_fmadd_ps(a5, m, c);
		a6 = _mm512_fmadd_ps(a6, m, c);
		a7 = _mm512_fmadd_ps(a7, m, c);
		a8 = _mm512_fmadd_ps(a8, m, c);
		a9 = _mm512_fmadd_ps(a9, m, c);
		a10 = _mm512_fmadd_ps(a10, m, c);
		a11 = _mm512_fmadd_ps(a11, m, c);
	}
	__m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
				 _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
	s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
	return (double)_mm512_reduce_add_ps(s);
}

int sd_cpu_probe(double seconds, double *ghz, double *gflops, char *msg, int msglen)
{
	if (!ghz || !gflops || !(seconds > 0))
		return sdi_fail(msg, msglen, SD_ERR_ARG, "probe: bad arguments");
	volatile uint64_t sink = 0;
	double best = 0;
	uint64_t iters = 1 << 20;
	double t0 = now(), deadline = t0 + seconds / 2;
	while (now() < deadline) {
		double s = now();
		sink += add_chain(iters, sink);
		double dt = now() - s;
		double f = (double)iters * 8 / dt / 1e9;
		if (f > best)
			best = f;
	}
	*ghz = best;
	*gflops = 0;
	if (sd_cpu_has_avx512()) {
		double bestf = 0;
		deadline = now() + seconds / 2;
		volatile double vs = 0;
		while (now() < deadline) {
			double s = now();
			vs += fma_loop(iters);
			double dt = now() - s;
			double f = (double)iters * 12 * 16 * 2 / dt / 1e9;
			if (f > bestf)
				bestf = f;
		}
		*gflops = bestf;
	}
	(void)sink;
	return SD_OK;
}

int sd_cpu_has_bf16(void)
{
	__builtin_cpu_init();
	return sd_cpu_has_avx512() && __builtin_cpu_supports("avx512bf16");
}

static int default_precision(void)
{
	const char *env = getenv("GOSD_PRECISION");
	if (env && strcmp(env, "bf16") == 0)
		return SD_PREC_BF16;
	return SD_PREC_F32;
}

int sd_cpu_set_precision(int prec, char *msg, int msglen)
{
	if (prec < 0)
		prec = default_precision();
	if (prec != SD_PREC_F32 && prec != SD_PREC_BF16)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "unknown precision %d", prec);
	__atomic_store_n(&g_prec, prec, __ATOMIC_RELAXED);
	return SD_OK;
}

int sd_cpu_precision(void)
{
	int p = __atomic_load_n(&g_prec, __ATOMIC_RELAXED);
	if (p < 0) {
		p = default_precision();
		__atomic_store_n(&g_prec, p, __ATOMIC_RELAXED);
	}
	return p;
}

int sdi_bf16(void)
{
	static int has = -1;
	if (sd_cpu_precision() != SD_PREC_BF16 || sdi_isa() != SD_ISA_AVX512)
		return 0;
	int h = __atomic_load_n(&has, __ATOMIC_RELAXED);
	if (h < 0) {
		h = sd_cpu_has_bf16();
		__atomic_store_n(&has, h, __ATOMIC_RELAXED);
	}
	return h;
}

int sd_cpu_bf16_active(void) { return sdi_bf16(); }
