/* gemm.h - the packed GEMM driver shared by linear, matmul, conv2d and attention. */
#ifndef GOSD_GEMM_H
#define GOSD_GEMM_H

#include "internal.h"

#include <immintrin.h>

/* sdi_mask16 returns the lanes l < 16 with lo <= l < hi. */
static inline __mmask16 sdi_mask16(int64_t lo, int64_t hi)
{
	lo = lo < 0 ? 0 : lo;
	hi = hi > 16 ? 16 : hi;
	if (hi <= lo)
		return 0;
	return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

/*
 * sdi_transpose16 writes the 16x16 transpose of r to col (lane i of col[c]
 * is lane c of r[i]): unpack pairs of rows (ps), then pairs of pairs (pd),
 * then exchange 128-bit lanes twice (shuffle_f32x4).
 */
SDI_AVX512 static inline void sdi_transpose16(const __m512 r[16], __m512 col[16])
{
	__m512 t[16], u[16];
	for (int i = 0; i < 8; i++) {
		t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
		t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
	}
	/* u[4g + m]: lane L holds column 4L + m of rows 4g .. 4g+3. */
	for (int g = 0; g < 4; g++) {
		__m512d a = _mm512_castps_pd(t[4 * g]), b = _mm512_castps_pd(t[4 * g + 1]);
		__m512d c = _mm512_castps_pd(t[4 * g + 2]), d = _mm512_castps_pd(t[4 * g + 3]);
		u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
		u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
		u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
		u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
	}
	for (int m = 0; m < 4; m++) {
		__m512 v0 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0x44);
		__m512 v1 = _mm512_shuffle_f32x4(u[m], u[4 + m], 0xEE);
		__m512 w0 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0x44);
		__m512 w1 = _mm512_shuffle_f32x4(u[8 + m], u[12 + m], 0xEE);
		col[m] = _mm512_shuffle_f32x4(v0, w0, 0x88);
		col[4 + m] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
		col[8 + m] = _mm512_shuffle_f32x4(v1, w1, 0x88);
		col[12 + m] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
	}
}

/*
 * Register block of the micro-kernels: a micro-tile of C is SDI_MR rows by
 * SDI_NR columns. Packed A holds SDI_MR rows interleaved per k ([kc][MR]),
 * packed B holds SDI_NR columns per k ([kc][NR]), both zero padded.
 *
 * Kernel families: the f32 family (ukr, tpack, cvt below) and the
 * AVX512-BF16 family (bf16.c), which reuses the f32 packers and converts
 * each packed panel to bf16 pairs of k ([kc/2][MR][2] and [kc/2][NR][2])
 * for the VDPBF16PS micro-kernel, or takes weight panels whole from the
 * weight cache. Both use the same MR x NR register block.
 * TODO: wire the AMX-BF16 tile kernel (amx.c, sdi_ukr_amx: 16x16 tiles,
 * 32-deep k blocks); it needs its own MR/NR and packers, so MR/NR become
 * per-family fields then. Unmeasured: no AMX on the development machine.
 */
#define SDI_MR 12
#define SDI_NR 32

/*
 * The micro-kernels' accumulators and epilogue, row i of the MR x NR block:
 * c<i>a and c<i>b (16 columns each), zeroed by SDI_ROW_DECL, added to C when
 * accum is set and stored at c + i*ldc by SDI_ROW_STORE. SDI_ROWS(X)
 * applies X to the 12 rows.
 */
#define SDI_ROW_DECL(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = _mm512_setzero_ps();
#define SDI_ROW_STORE(i)                                                                  \
	{                                                                                 \
		float *cr = c + (i) * ldc;                                                \
		if (accum) {                                                              \
			c##i##a = _mm512_add_ps(c##i##a, _mm512_loadu_ps(cr));            \
			c##i##b = _mm512_add_ps(c##i##b, _mm512_loadu_ps(cr + 16));       \
		}                                                                         \
		_mm512_storeu_ps(cr, c##i##a);                                            \
		_mm512_storeu_ps(cr + 16, c##i##b);                                       \
	}
#define SDI_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)

/* Geometry of an implicit-GEMM convolution (B is im2col(x), generated while packing). */
typedef struct {
	const float *x; /* [C, H, W] of one image */
	int64_t c, h, w, kh, kw, stride, pt, pl, ho, wo;
	int64_t xstride; /* floats between images, for SDI_A_IM2COLT rows past ho*wo */
} sdi_conv_geo;

enum {
	SDI_A_ROWS = 0,   /* A[i][p] = a[i*lda + p], dtype adt */
	SDI_A_IM2COLT = 4, /* A[i][p] = im2col(geo)[p][i] (rows are output positions) */
	SDI_B_ROWS = 1,   /* B[p][j] = b[p*ldb + j], f32 */
	SDI_B_TRANS = 2,  /* B[p][j] = b[j*ldb + p], dtype bdt */
	SDI_B_IM2COL = 3, /* B[p][j] = im2col(geo)[p][j] */
};

/* C[M, N] = A[M, K]·B[K, N] (+ bias_m[i] per row) (+ bias_n[j] per column). */
typedef struct {
	int64_t m, n, k;
	int a_kind;
	const void *a;
	int adt;
	int64_t lda;
	int b_kind;
	const void *b;
	int bdt;
	int64_t ldb;
	const sdi_conv_geo *geo;
	float *c;
	int64_t ldc;
	const float *bias_m, *bias_n;
	int nthreads; /* 0: sdi_threads() */
	/*
	 * Batch: batch > 1 computes C_n = A·B_n for n < batch, with B_n at
	 * b_bstride floats (SDI_B_ROWS: b; SDI_B_IM2COL: geo->x) and C_n at
	 * c_bstride floats from the first; A is packed once for all of them.
	 */
	int64_t batch, b_bstride, c_bstride;
	/*
	 * weight: SDI_W_A or SDI_W_B when that operand is a model weight (never
	 * changed while the process runs), so that bf16 runs may take its packed
	 * panels from the weight cache; 0 otherwise.
	 */
	int weight;
} sdi_gemm;

enum { SDI_W_A = 1, SDI_W_B = 2 };

/* Micro-kernel: C[MR, NR] (row stride ldc) = (accum ? C : 0) + A·B over k. */
typedef void (*sdi_ukr_fn)(int64_t k, const float *a, const float *b, float *c, int64_t ldc,
			   int accum);
/* Row converter: dst[i] = f32(src[off + i]) for i < n. */
typedef void (*sdi_cvt_fn)(const void *src, int dt, int64_t off, int64_t n, float *dst);

/*
 * Transposing pack: dst[k*dstride + r] = f32(src[r*ld + k]) for k < kc and
 * r < width (width <= 16), with rows r >= nrows written as zeros.
 */
typedef void (*sdi_tpack_fn)(const void *src, int dt, int64_t ld, int64_t nrows, int width,
			     int64_t kc, float *dst, int64_t dstride);

/*
 * bf16 micro-kernel (AVX512-BF16 VDPBF16PS): C[MR, NR] = (accum ? C : 0) +
 * A·B over k2 pairs of k, with a [k2][MR][2] and b [k2][NR][2] bf16.
 */
typedef void (*sdi_ukr16_fn)(int64_t k2, const uint16_t *a, const uint16_t *b, float *c,
			     int64_t ldc, int accum);
void sdi_ukr_bf16(int64_t k2, const uint16_t *a, const uint16_t *b, float *c, int64_t ldc,
		  int accum);
/*
 * sdi_panel_bf16 converts a packed f32 panel src [kc][r] (row stride sstride)
 * into bf16 pairs dst [(kc+1)/2][r][2], rounding to nearest even; an odd kc
 * is padded with a zero row. r <= 64.
 */
void sdi_panel_bf16(const float *src, int64_t sstride, int64_t kc, int r, uint16_t *dst);
/*
 * sdi_tpack_bf16 packs rows [0, nrows) of f32 src (row stride ld), depth kc,
 * straight into bf16 pairs: 32-bit word [q*dstride + r] of dst holds
 * elements 2q and 2q+1 of row r, for r < width <= 16; padding is zero.
 */
void sdi_tpack_bf16(const float *src, int64_t ld, int64_t nrows, int width, int64_t kc,
		    uint16_t *dst, int64_t dstride);
/*
 * sdi_wcache returns the whole weight operand (which = SDI_W_A: g->a with R =
 * SDI_MR; SDI_W_B: g->b with R = SDI_NR) packed in bf16 panels, cached: depth
 * block i (kcb deep, kcbp = kcb rounded up to even) and panel p lie at
 * (i*panels + p)*kcbp*R. NULL when the cache budget is spent (pack per call).
 */
const uint16_t *sdi_wcache(const sdi_gemm *g, int which, int64_t kcb);

/*
 * sdi_wcache_fill is the cache for other packed forms of a weight p of nel
 * elements (kind < 0 tells them apart; rows and k complete the key): on a
 * miss fill(ctx, dst) writes bytes of panels and returns nonzero. NULL when
 * the budget is spent or the fill failed.
 */
const uint16_t *sdi_wcache_fill(const void *p, int dt, int kind, int64_t rows, int64_t k, int64_t nel,
				size_t bytes, int (*fill)(void *ctx, uint16_t *dst), void *ctx);

/*
 * sdi_conv3x3_wino computes a 3x3, stride 1, pad 1 convolution of bf16 runs
 * with Winograd's F(2x2, 3x3) (winograd.c); returns SD_OK, SD_ERR_NOMEM, or
 * -1 when the shape is not one it takes (the caller falls back).
 */
int sdi_conv3x3_wino(float *y, const float *x, const void *w, int wdt, const float *bias,
		     int64_t batch, int64_t c, int64_t h, int64_t wd, int64_t o);

/* AMX-BF16 tile kernel (amx.c); only when sd_cpu_has_amx(). Not used yet. */
void sdi_ukr_amx(int64_t kb, const uint16_t *a, const uint16_t *b, float *c, int64_t ldc);

sdi_ukr_fn sdi_get_ukr(void);
sdi_tpack_fn sdi_get_tpack(void);
sdi_cvt_fn sdi_get_cvt(void);

/* sdi_gemm_run computes g; returns SD_OK or SD_ERR_NOMEM. */
int sdi_gemm_run(const sdi_gemm *g);

#endif
