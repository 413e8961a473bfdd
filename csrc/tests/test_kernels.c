/*
 * test_kernels.c - C tests of a few kernels against plain double-precision
 * loops, for every kernel family the CPU supports, with guard bands around
 * every destination. Exits non-zero on the first failure.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gosd_cpu.h"

#define GUARD 64
static const float SENTINEL = -12345.678f;
static int failures;
/*
 * bf16 runs round both operands to bf16 (relative error u = 2^-9 each) and
 * accumulate in f32: |error| <= (2u + u^2 + k*2^-24) * sum|x*w| <= that * k
 * for values in [-1, 1].
 */
static int bf16_mode;
static double tol(int64_t k, double f32_atol)
{
	if (!bf16_mode)
		return f32_atol;
	double u = 1.0 / 512;
	return (2 * u + u * u + (double)k / 16777216.0) * (double)k + 1e-5;
}

static float frand(unsigned *s)
{
	*s = *s * 1664525u + 1013904223u;
	return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* f32 -> f16 bits (round to nearest even), normal range only; enough for test data. */
static uint16_t to_f16(float f, float *back)
{
	char msg[128];
	uint16_t h;
	float r;
	sd_cast_from_f32(&h, &f, SD_F16, 1, msg, sizeof msg);
	sd_cast_to_f32(&r, &h, SD_F16, 1, msg, sizeof msg);
	*back = r;
	return h;
}

/* guarded allocates n floats between two guard bands. */
static float *guarded(size_t n)
{
	float *b = malloc((n + 2 * GUARD) * sizeof(float));
	for (size_t i = 0; i < n + 2 * GUARD; i++)
		b[i] = SENTINEL;
	return b + GUARD;
}

static void check_guard(const char *name, float *y, size_t n)
{
	for (int i = 0; i < GUARD; i++)
		if (y[-1 - i] != SENTINEL || y[n + i] != SENTINEL) {
			printf("FAIL %s: write outside the destination\n", name);
			failures++;
			return;
		}
}

static void compare(const char *name, const float *got, const double *want, size_t n, double atol,
		    double rtol)
{
	for (size_t i = 0; i < n; i++) {
		double d = fabs((double)got[i] - want[i]);
		if (!(d <= atol + rtol * fabs(want[i]))) {
			printf("FAIL %s: [%zu] = %.9g, want %.9g\n", name, i, got[i], want[i]);
			failures++;
			return;
		}
	}
	printf("ok   %s\n", name);
}

static void test_linear(int64_t m, int64_t n, int64_t k)
{
	unsigned s = 1;
	char msg[256], name[96];
	float *x = malloc(sizeof(float) * m * k), *wf = malloc(sizeof(float) * n * k);
	uint16_t *wh = malloc(2 * n * k);
	float b[4096];
	for (int64_t i = 0; i < m * k; i++)
		x[i] = frand(&s);
	for (int64_t i = 0; i < n * k; i++)
		wh[i] = to_f16(frand(&s), &wf[i]);
	for (int64_t i = 0; i < n; i++)
		b[i] = frand(&s);
	double *want = malloc(sizeof(double) * m * n);
	for (int64_t i = 0; i < m; i++)
		for (int64_t j = 0; j < n; j++) {
			double acc = b[j];
			for (int64_t p = 0; p < k; p++)
				acc += (double)x[i * k + p] * wf[j * k + p];
			want[i * n + j] = acc;
		}
	float *y = guarded(m * n);
	int st = sd_linear(y, x, wh, SD_F16, b, SD_F32, m, n, k, msg, sizeof msg);
	snprintf(name, sizeof name, "linear f16 %lldx%lldx%lld", (long long)m, (long long)n,
		 (long long)k);
	if (st) {
		printf("FAIL %s: status %d: %s\n", name, st, msg);
		failures++;
	} else {
		check_guard(name, y, m * n);
		compare(name, y, want, m * n, tol(k, 1e-4), 1e-5); /* f32 sums of k <= 600 terms in [-1, 1] */
	}
	free(x), free(wf), free(wh), free(want), free(y - GUARD);
}

static void test_conv(int64_t c, int64_t h, int64_t w, int64_t o, int64_t kk, int64_t stride,
		      int64_t pad)
{
	unsigned s = 2;
	char msg[256], name[96];
	int64_t ho = (h + 2 * pad - kk) / stride + 1, wo = (w + 2 * pad - kk) / stride + 1;
	float *x = malloc(sizeof(float) * c * h * w), *wt = malloc(sizeof(float) * o * c * kk * kk);
	for (int64_t i = 0; i < c * h * w; i++)
		x[i] = frand(&s);
	for (int64_t i = 0; i < o * c * kk * kk; i++)
		wt[i] = frand(&s);
	double *want = calloc((size_t)(o * ho * wo), sizeof(double));
	for (int64_t oc = 0; oc < o; oc++)
		for (int64_t oy = 0; oy < ho; oy++)
			for (int64_t ox = 0; ox < wo; ox++) {
				double acc = 0;
				for (int64_t ic = 0; ic < c; ic++)
					for (int64_t ky = 0; ky < kk; ky++)
						for (int64_t kx = 0; kx < kk; kx++) {
							int64_t iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
							if (iy < 0 || iy >= h || ix < 0 || ix >= w)
								continue;
							acc += (double)x[(ic * h + iy) * w + ix] *
							       wt[((oc * c + ic) * kk + ky) * kk + kx];
						}
				want[(oc * ho + oy) * wo + ox] = acc;
			}
	float *y = guarded(o * ho * wo);
	int st = sd_conv2d(y, x, wt, SD_F32, NULL, SD_F32, 1, c, h, w, o, kk, kk, stride, pad, pad, ho,
			   wo, msg, sizeof msg);
	snprintf(name, sizeof name, "conv2d %lldx%lldx%lld k%lld s%lld p%lld -> %lld",
		 (long long)c, (long long)h, (long long)w, (long long)kk, (long long)stride,
		 (long long)pad, (long long)o);
	if (st) {
		printf("FAIL %s: status %d: %s\n", name, st, msg);
		failures++;
	} else {
		check_guard(name, y, o * ho * wo);
		compare(name, y, want, o * ho * wo, tol(c * kk * kk, 1e-4), 1e-5);
	}
	free(x), free(wt), free(want), free(y - GUARD);
}

static void test_attention(int64_t lq, int64_t lk, int64_t heads, int64_t d, int causal)
{
	unsigned s = 3;
	char msg[256], name[96];
	int64_t hd = heads * d;
	float *q = malloc(sizeof(float) * lq * hd), *k = malloc(sizeof(float) * lk * hd);
	float *v = malloc(sizeof(float) * lk * hd);
	for (int64_t i = 0; i < lq * hd; i++)
		q[i] = frand(&s);
	for (int64_t i = 0; i < lk * hd; i++)
		k[i] = frand(&s), v[i] = frand(&s);
	double *want = malloc(sizeof(double) * lq * hd), *sc = malloc(sizeof(double) * lk);
	for (int64_t h = 0; h < heads; h++)
		for (int64_t i = 0; i < lq; i++) {
			int64_t end = causal ? i + 1 : lk;
			double mx = -INFINITY, sum = 0;
			for (int64_t j = 0; j < end; j++) {
				double a = 0;
				for (int64_t t = 0; t < d; t++)
					a += (double)q[i * hd + h * d + t] * k[j * hd + h * d + t];
				sc[j] = a / sqrt((double)d);
				mx = sc[j] > mx ? sc[j] : mx;
			}
			for (int64_t j = 0; j < end; j++)
				sum += sc[j] = exp(sc[j] - mx);
			for (int64_t t = 0; t < d; t++) {
				double a = 0;
				for (int64_t j = 0; j < end; j++)
					a += sc[j] * v[j * hd + h * d + t];
				want[i * hd + h * d + t] = a / sum;
			}
		}
	float *y = guarded(lq * hd);
	int st = sd_attention(y, q, k, v, 1, lq, lk, heads, d, causal, msg, sizeof msg);
	snprintf(name, sizeof name, "attention lq=%lld lk=%lld h=%lld d=%lld causal=%d",
		 (long long)lq, (long long)lk, (long long)heads, (long long)d, causal);
	if (st) {
		printf("FAIL %s: status %d: %s\n", name, st, msg);
		failures++;
	} else {
		check_guard(name, y, lq * hd);
		compare(name, y, want, lq * hd, 2e-5, 1e-4); /* averages of values in [-1, 1] */
	}
	free(q), free(k), free(v), free(want), free(sc), free(y - GUARD);
}

static void test_group_norm(void)
{
	unsigned s = 4;
	char msg[256];
	const int64_t c = 64, sp = 97, g = 8, cg = c / g;
	float *x = malloc(sizeof(float) * c * sp), gamma[64], beta[64];
	for (int64_t i = 0; i < c * sp; i++)
		x[i] = 3 + frand(&s);
	for (int i = 0; i < c; i++)
		gamma[i] = 1 + 0.5f * frand(&s), beta[i] = frand(&s);
	double *want = malloc(sizeof(double) * c * sp);
	for (int64_t gi = 0; gi < g; gi++) {
		double mean = 0, var = 0;
		for (int64_t i = 0; i < cg * sp; i++)
			mean += x[gi * cg * sp + i];
		mean /= cg * sp;
		for (int64_t i = 0; i < cg * sp; i++)
			var += (x[gi * cg * sp + i] - mean) * (x[gi * cg * sp + i] - mean);
		var /= cg * sp;
		for (int64_t i = 0; i < cg * sp; i++) {
			int64_t ch = gi * cg + i / sp;
			double v = (x[gi * cg * sp + i] - mean) / sqrt(var + 1e-5) * gamma[ch] + beta[ch];
			want[gi * cg * sp + i] = v / (1 + exp(-v));
		}
	}
	float *y = guarded(c * sp);
	int st = sd_group_norm(y, x, gamma, SD_F32, beta, SD_F32, 1, c, sp, g, 1e-5f, 1, msg,
			       sizeof msg);
	if (st) {
		printf("FAIL group_norm: status %d: %s\n", st, msg);
		failures++;
	} else {
		check_guard("group_norm+silu", y, c * sp);
		compare("group_norm+silu", y, want, c * sp, 2e-5, 1e-5);
	}
	free(x), free(want), free(y - GUARD);
}

static void test_errors(void)
{
	char msg[256] = "";
	float y[4], x[4];
	int st = sd_conv2d(y, x, x, SD_F32, NULL, SD_F32, 1, 1, 2, 2, 1, 1, 1, 0, 0, 0, 2, 2, msg,
			   sizeof msg);
	if (st != SD_ERR_ARG || strstr(msg, "conv2d") == NULL) {
		printf("FAIL conv2d stride 0: status %d, message '%s'\n", st, msg);
		failures++;
	} else {
		printf("ok   error: %s\n", msg);
	}
	st = sd_linear(y, x, x, 7, NULL, SD_F32, 1, 1, 1, msg, sizeof msg);
	if (st != SD_ERR_DTYPE) {
		printf("FAIL linear dtype 7: status %d\n", st);
		failures++;
	}
}

int main(void)
{
	char msg[256];
	int isas[2] = {SD_ISA_PORTABLE, SD_ISA_AVX512};
	int n = sd_cpu_has_avx512() ? 2 : 1;
	const char *env = getenv("GOSD_CPU");
	if (env && strcmp(env, "portable") == 0) {
		if (sd_cpu_isa() != SD_ISA_PORTABLE) {
			printf("FAIL GOSD_CPU=portable did not select the portable kernels\n");
			return 1;
		}
		n = 1; /* the environment's choice only */
	}
	for (int i = 0; i < n; i++) {
		if (sd_cpu_set_isa(isas[i], msg, sizeof msg) != SD_OK) {
			printf("FAIL set_isa: %s\n", msg);
			return 1;
		}
		printf("-- %s, %d threads\n", isas[i] ? "avx512" : "portable", sd_cpu_threads());
		test_linear(7, 13, 29);
		test_linear(130, 70, 600);
		test_conv(5, 11, 13, 7, 3, 1, 1);
		test_conv(4, 9, 40, 6, 3, 2, 1);
		test_conv(6, 5, 70, 5, 1, 1, 0);
		test_conv(40, 4, 3, 70, 3, 1, 1); /* few positions: transposed GEMM */
		test_attention(100, 100, 2, 24, 1);
		test_attention(70, 77, 3, 40, 0);
		test_group_norm();
		test_errors();
	}
	if (n == 2 && sd_cpu_has_bf16()) {
		if (sd_cpu_set_precision(SD_PREC_BF16, msg, sizeof msg) != SD_OK || !sd_cpu_bf16_active()) {
			printf("FAIL bf16 precision not active\n");
			return 1;
		}
		bf16_mode = 1;
		printf("-- avx512-bf16\n");
		for (int rep = 0; rep < 2; rep++) { /* the second pass reads cached weight panels */
			test_linear(7, 13, 29);
			test_linear(130, 70, 600);
			test_conv(5, 11, 13, 7, 3, 1, 1);
			test_conv(4, 9, 40, 6, 3, 2, 1);
			test_conv(40, 4, 3, 70, 3, 1, 1);
		}
		if (sd_cpu_weight_cache(-1) <= 0) {
			printf("FAIL bf16 weight cache empty after bf16 runs\n");
			failures++;
		}
		sd_cpu_set_precision(SD_PREC_F32, msg, sizeof msg);
	}
	if (sd_cpu_has_amx())
		printf("note: AMX-BF16 present; its kernel is not wired in yet\n");
	printf("%d failures\n", failures);
	return failures != 0;
}
