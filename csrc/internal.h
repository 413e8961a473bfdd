/* internal.h - helpers shared by the kernel files (not part of the ABI). */
#ifndef GOSD_INTERNAL_H
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif
#define GOSD_INTERNAL_H

#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gosd_cpu.h"

#ifdef _OPENMP
#include <omp.h>
/*
 * SDI_DUAL defines a function twice from one body: name_portable for any
 * x86-64 and name_avx512 compiled for AVX-512 (the compiler vectorises the
 * loops of each for its target).
 */
#define SDI_DUAL(name, params, ...)                                                          \
	static void name##_portable params __VA_ARGS__ SDI_AVX512 static void name##_avx512      \
		params __VA_ARGS__
#define SDI_PICK(name) (sdi_isa() == SD_ISA_AVX512 ? name##_avx512 : name##_portable)

#endif

/* Attribute for functions compiled for AVX-512 (chosen at run time). */
#define SDI_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c")))

/* Work below this many elements runs on one thread. */
#define SDI_PAR_MIN 32768

int sdi_threads(void);

/*
 * Work accounting: every parallel region's body is bracketed by
 * sdi_work_begin/sdi_work_end in each thread (before the region's closing
 * barrier), adding the thread's working time to a process-wide counter
 * (sd_cpu_work_ns). Idle time at barriers is not counted.
 */
int64_t sdi_work_begin(void);
void sdi_work_end(int64_t t0);
int sdi_isa(void);
/* sdi_bf16 reports whether matrix products run in bf16 (precision bf16 on an AVX512-BF16 CPU). */
int sdi_bf16(void);
/* sdi_fail formats a message into msg and returns status. */
int sdi_fail(char *msg, int msglen, int status, const char *fmt, ...);
/* sdi_alloc returns 64-byte aligned memory (free with free) or NULL. */
void *sdi_alloc(size_t bytes);
/*
 * sdi_scratch returns this thread's scratch buffer number slot (0 to 5) of at
 * least bytes bytes, 64-byte aligned, kept and reused by later calls on the
 * same thread (freed when the thread exits); NULL if out of memory. A slot's
 * contents are not preserved when it grows.
 */
void *sdi_scratch(int slot, size_t bytes);
/* sdi_vec_f32 returns a malloc'ed f32 copy of a small vector (NULL if p is NULL). */
float *sdi_vec_f32(const void *p, int dt, int64_t n);
int sdi_dtype_ok(int dt);

static inline float sdi_bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

static inline uint32_t sdi_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	return u;
}

/* sdi_f16_f32 converts IEEE binary16 bits to f32 exactly. */
static inline float sdi_f16_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16;
	uint32_t em = h & 0x7fff;
	if (em >= 0x7c00)
		return sdi_bits_f32(sign | 0x7f800000u | ((em & 0x3ff) << 13));
	if (em >= 0x400)
		return sdi_bits_f32(sign | ((em << 13) + (112u << 23)));
	float f = (float)em * 5.9604644775390625e-8f; /* subnormal: em * 2^-24 */
	return sign ? -f : f;
}

static inline float sdi_bf16_f32(uint16_t h) { return sdi_bits_f32((uint32_t)h << 16); }

/* sdi_load reads element i of a weight array of dtype dt as f32. */
static inline float sdi_load(const void *p, int dt, int64_t i)
{
	if (dt == SD_F32)
		return ((const float *)p)[i];
	if (dt == SD_F16)
		return sdi_f16_f32(((const uint16_t *)p)[i]);
	return sdi_bf16_f32(((const uint16_t *)p)[i]);
}

/*
 * sdi_expf: exp(x) for f32, branch free so that compilers vectorise it.
 * x = n*ln2 + r with |r| <= ln2/2; exp(r) by its degree-6 Taylor polynomial
 * (truncation error < 2e-8 relative); 2^n is built in the exponent bits.
 * Inputs are clamped to [-87.3, 88.7]; below that the result is about 1e-38,
 * which callers treat as 0.
 */
static inline float sdi_expf(float x)
{
	x = x < -87.3f ? -87.3f : x;
	x = x > 88.7f ? 88.7f : x;
	/* Round to nearest by adding and removing 1.5*2^23 (|x*log2e| < 2^22). */
	float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
	float r = x - n * 0.693145751953125f; /* ln2 split in a high part ... */
	r = r - n * 1.428606765330187045e-06f; /* ... and a low part */
	float p = 1.0f / 720;
	p = p * r + 1.0f / 120;
	p = p * r + 1.0f / 24;
	p = p * r + 1.0f / 6;
	p = p * r + 0.5f;
	p = p * r + 1.0f;
	p = p * r + 1.0f;
	int32_t e = (int32_t)n + 127;
	return p * sdi_bits_f32((uint32_t)e << 23);
}

/*
 * sdi_erff: erf(x) by Abramowitz and Stegun 7.1.26 (absolute error below
 * 1.5e-7), written branch free.
 */
static inline float sdi_erff(float x)
{
	float ax = x < 0 ? -x : x;
	float t = 1.0f / (1.0f + 0.3275911f * ax);
	float p = 1.061405429f;
	p = p * t - 1.453152027f;
	p = p * t + 1.421413741f;
	p = p * t - 0.284496736f;
	p = p * t + 0.254829592f;
	float y = 1.0f - p * t * sdi_expf(-ax * ax);
	return x < 0 ? -y : y;
}

static inline float sdi_gelu(float x) { return 0.5f * x * (1.0f + sdi_erff(x * 0.70710678118654752f)); }
static inline float sdi_silu(float x) { return x / (1.0f + sdi_expf(-x)); }

/* Parallel-for helpers: a loop over [0, n) split in static chunks. */
#define SDI_NT(work) ((work) >= SDI_PAR_MIN ? sdi_threads() : 1)

/*
 * SDI_DUAL defines a function twice from one body: name_portable for any
 * x86-64 and name_avx512 compiled for AVX-512 (the compiler vectorises the
 * loops of each for its target).
 */
#define SDI_DUAL(name, params, ...)                                                          \
	static void name##_portable params __VA_ARGS__ SDI_AVX512 static void name##_avx512      \
		params __VA_ARGS__
#define SDI_PICK(name) (sdi_isa() == SD_ISA_AVX512 ? name##_avx512 : name##_portable)

#endif
