/*
 * gemm.c - packed GEMM in the style of BLIS (Van Zee and van de Geijn, "BLIS:
 * A Framework for Rapidly Instantiating BLAS Functionality", 2015): loops over
 * column blocks (NC), depth blocks (KC) and row blocks (MC) around a
 * register-blocked MR x NR micro-kernel, with A and B packed per block so the
 * micro-kernel streams contiguous memory. Weights of any dtype are converted
 * to f32 while packing. Threads split C into one rectangle each.
 */
#include "gemm.h"

#include <immintrin.h>

#ifndef SDI_KC_MAX
#define SDI_KC_MAX 320
#endif
#ifndef SDI_MC
#define SDI_MC 72
#endif
#ifndef SDI_NC
#define SDI_NC 3072
#endif
#ifndef SDI_NC_ACT
#define SDI_NC_ACT 512
#endif

/*
 * nc_block is the width of the column blocks of C. When B is an activation
 * packed per call (im2col of a convolution, or its rows), a block's packed
 * panels (f32, then bf16) should stay in the core's L2 while every row
 * block of A passes over them: 512 columns (measured on Zen 4, 1 MiB L2:
 * 384 to 768 are alike; VAE-sized 3x3 convolutions went from 235-320 to
 * 290-390 GFLOP/s in bf16 against 3072). When B is a weight (linear
 * layers), A is the per-call operand and wide blocks avoid packing it
 * again for every block. GOSD_NC_ACT overrides the width (tuning aid for
 * other caches).
 */
static int64_t nc_block(const sdi_gemm *g)
{
	static int64_t act = -1;
	if (act < 0) {
		const char *e = getenv("GOSD_NC_ACT");
		act = e ? atoll(e) : SDI_NC_ACT;
		act = act < SDI_NR ? SDI_NR : act / SDI_NR * SDI_NR;
	}
	return g->b_kind == SDI_B_IM2COL || g->b_kind == SDI_B_ROWS ? act : SDI_NC;
}

/* ---- portable kernels ---- */

static void ukr_portable(int64_t k, const float *a, const float *b, float *c, int64_t ldc,
			 int accum)
{
	float acc[SDI_MR][SDI_NR];
	memset(acc, 0, sizeof acc);
	for (int64_t p = 0; p < k; p++) {
		const float *ap = a + p * SDI_MR, *bp = b + p * SDI_NR;
		for (int i = 0; i < SDI_MR; i++) {
			float av = ap[i];
			for (int j = 0; j < SDI_NR; j++)
				acc[i][j] += av * bp[j];
		}
	}
	for (int i = 0; i < SDI_MR; i++) {
		float *cr = c + i * ldc;
		if (accum)
			for (int j = 0; j < SDI_NR; j++)
				cr[j] += acc[i][j];
		else
			for (int j = 0; j < SDI_NR; j++)
				cr[j] = acc[i][j];
	}
}

static void cvt_portable(const void *src, int dt, int64_t off, int64_t n, float *dst)
{
	if (dt == SD_F32) {
		memcpy(dst, (const float *)src + off, (size_t)n * sizeof(float));
		return;
	}
	const uint16_t *s = (const uint16_t *)src + off;
	if (dt == SD_F16)
		for (int64_t i = 0; i < n; i++)
			dst[i] = sdi_f16_f32(s[i]);
	else
		for (int64_t i = 0; i < n; i++)
			dst[i] = sdi_bf16_f32(s[i]);
}

/* ---- AVX-512 kernels ---- */

#define SDI_ROW_FMA(i)                                                                    \
	{                                                                                 \
		__m512 av = _mm512_set1_ps(a[i]);                                         \
		c##i##a = _mm512_fmadd_ps(av, b0, c##i##a);                               \
		c##i##b = _mm512_fmadd_ps(av, b1, c##i##b);                               \
	}

SDI_AVX512 static void ukr_avx512(int64_t k, const float *a, const float *b, float *c,
				  int64_t ldc, int accum)
{
	SDI_ROWS(SDI_ROW_DECL)
	/* Bring the C tile towards L1 while the k loop runs. */
	for (int i = 0; i < SDI_MR; i++) {
		_mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
		_mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
	}
	for (int64_t p = 0; p < k; p++) {
		__m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
		_mm_prefetch((const char *)(b + 8 * SDI_NR), _MM_HINT_T0);
		SDI_ROWS(SDI_ROW_FMA)
		a += SDI_MR;
		b += SDI_NR;
	}
	SDI_ROWS(SDI_ROW_STORE)
}

SDI_AVX512 static void cvt_avx512(const void *src, int dt, int64_t off, int64_t n, float *dst)
{
	if (dt == SD_F32) {
		memcpy(dst, (const float *)src + off, (size_t)n * sizeof(float));
		return;
	}
	const uint16_t *s = (const uint16_t *)src + off;
	int64_t i = 0;
	if (dt == SD_F16) {
		for (; i + 16 <= n; i += 16)
			_mm512_storeu_ps(dst + i,
					 _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
		for (; i < n; i++)
			dst[i] = sdi_f16_f32(s[i]);
	} else {
		for (; i + 16 <= n; i += 16) {
			__m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(s + i)));
			_mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
		}
		for (; i < n; i++)
			dst[i] = sdi_bf16_f32(s[i]);
	}
}

static void tpack_portable(const void *src, int dt, int64_t ld, int64_t nrows, int width,
			   int64_t kc, float *dst, int64_t dstride)
{
	for (int64_t r = 0; r < width; r++) {
		if (r >= nrows) {
			for (int64_t k = 0; k < kc; k++)
				dst[k * dstride + r] = 0;
			continue;
		}
		if (dt == SD_F32) {
			const float *s = (const float *)src + r * ld;
			for (int64_t k = 0; k < kc; k++)
				dst[k * dstride + r] = s[k];
		} else if (dt == SD_F16) {
			const uint16_t *s = (const uint16_t *)src + r * ld;
			for (int64_t k = 0; k < kc; k++)
				dst[k * dstride + r] = sdi_f16_f32(s[k]);
		} else {
			const uint16_t *s = (const uint16_t *)src + r * ld;
			for (int64_t k = 0; k < kc; k++)
				dst[k * dstride + r] = sdi_bf16_f32(s[k]);
		}
	}
}

/* Load up to 16 elements (mask m) of one row as f32. */
SDI_AVX512 static inline __m512 load16(const void *src, int dt, int64_t off, __mmask16 m)
{
	if (dt == SD_F32)
		return _mm512_maskz_loadu_ps(m, (const float *)src + off);
	__m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)src + off);
	if (dt == SD_F16)
		return _mm512_cvtph_ps(h);
	return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* Transposing pack: 16 rows at a time through sdi_transpose16 (gemm.h). */
SDI_AVX512 static void tpack_avx512(const void *src, int dt, int64_t ld, int64_t nrows,
				    int width, int64_t kc, float *dst, int64_t dstride)
{
	__mmask16 wm = (__mmask16)((1u << width) - 1);
	for (int64_t k0 = 0; k0 < kc; k0 += 16) {
		int64_t kn = kc - k0 < 16 ? kc - k0 : 16;
		__mmask16 km = (__mmask16)((1u << kn) - 1);
		__m512 r[16];
		for (int i = 0; i < 16; i++)
			r[i] = i < nrows ? load16(src, dt, i * ld + k0, km) : _mm512_setzero_ps();
		__m512 col[16];
		sdi_transpose16(r, col);
		for (int64_t k = 0; k < kn; k++)
			_mm512_mask_storeu_ps(dst + (k0 + k) * dstride, wm, col[k]);
	}
}

sdi_tpack_fn sdi_get_tpack(void)
{
	return sdi_isa() == SD_ISA_AVX512 ? tpack_avx512 : tpack_portable;
}

sdi_ukr_fn sdi_get_ukr(void) { return sdi_isa() == SD_ISA_AVX512 ? ukr_avx512 : ukr_portable; }
sdi_cvt_fn sdi_get_cvt(void) { return sdi_isa() == SD_ISA_AVX512 ? cvt_avx512 : cvt_portable; }

/* ---- packing ---- */

typedef struct {
	sdi_ukr_fn ukr;
	sdi_cvt_fn cvt;
	sdi_tpack_fn tpack;
	void (*im2col)(const sdi_conv_geo *, float *, int64_t, int64_t, int64_t, int64_t);
	float *apack, *bpack, *row, *tmp;
	uint16_t *a16, *b16; /* bf16 panels (bf16 runs) */
	const uint16_t *wa, *wb; /* cached bf16 weight panels, or NULL */
} sdi_ctx;

/* pack_a_im2colt packs rows (output positions) [i0, i0+mr) of im2col(x)ᵀ, depth [p0, p0+kc). */
static void pack_a_im2colt(const sdi_conv_geo *q, float *d, int64_t i0, int64_t mr, int64_t p0,
			   int64_t kc)
{
	int64_t khw = q->kh * q->kw;
	for (int64_t i = 0; i < SDI_MR; i++) {
		if (i >= mr) {
			for (int64_t p = 0; p < kc; p++)
				d[p * SDI_MR + i] = 0;
			continue;
		}
		int64_t img = (i0 + i) / (q->ho * q->wo), pos = (i0 + i) % (q->ho * q->wo);
		int64_t oy = pos / q->wo, ox = pos % q->wo;
		int64_t iy0 = oy * q->stride - q->pt, ix0 = ox * q->stride - q->pl;
		const float *xi = q->x + img * q->xstride;
		int64_t ci = p0 / khw, r = p0 % khw, ky = r / q->kw, kx = r % q->kw;
		for (int64_t p = 0; p < kc; p++) {
			int64_t iy = iy0 + ky, ix = ix0 + kx;
			d[p * SDI_MR + i] = (iy >= 0 && iy < q->h && ix >= 0 && ix < q->w)
						    ? xi[(ci * q->h + iy) * q->w + ix]
						    : 0.0f;
			if (++kx == q->kw) {
				kx = 0;
				if (++ky == q->kh)
					ky = 0, ci++;
			}
		}
	}
}

/* pack_a packs rows [i0, i0+mc) and depth [p0, p0+kc) of A into MR-row panels. */
static void pack_a(const sdi_gemm *g, sdi_ctx *x, float *apack, int64_t i0, int64_t mc, int64_t p0,
		   int64_t kc)
{
	if (g->a_kind == SDI_A_IM2COLT) {
		for (int64_t ip = 0; ip < mc; ip += SDI_MR)
			pack_a_im2colt(g->geo, apack + (ip / SDI_MR) * kc * SDI_MR, i0 + ip,
				       mc - ip < SDI_MR ? mc - ip : SDI_MR, p0, kc);
		return;
	}
	size_t es = g->adt == SD_F32 ? 4 : 2;
	for (int64_t ip = 0; ip < mc; ip += SDI_MR) {
		float *d = apack + (ip / SDI_MR) * kc * SDI_MR;
		int64_t mr = mc - ip < SDI_MR ? mc - ip : SDI_MR;
		const char *src = (const char *)g->a + ((i0 + ip) * g->lda + p0) * es;
		x->tpack(src, g->adt, g->lda, mr, SDI_MR, kc, d, SDI_MR);
	}
}

/*
 * Run copiers: o[j] = row[ix0 + j*stride] for j < len, 0 where the index is
 * outside [0, w) (zero padding).
 */
static void run_portable(float *o, const float *row, int64_t ix0, int64_t len, int64_t w,
			 int64_t stride)
{
	if (stride == 1) {
		int64_t lo = ix0 < 0 ? -ix0 : 0, hi = w - ix0;
		lo = lo > len ? len : lo;
		hi = hi > len ? len : hi;
		hi = hi < lo ? lo : hi;
		for (int64_t j = 0; j < lo; j++)
			o[j] = 0;
		if (hi > lo)
			memcpy(o + lo, row + ix0 + lo, (size_t)(hi - lo) * sizeof(float));
		for (int64_t j = hi; j < len; j++)
			o[j] = 0;
		return;
	}
	for (int64_t j = 0; j < len; j++) {
		int64_t ix = ix0 + j * stride;
		o[j] = (ix >= 0 && ix < w) ? row[ix] : 0.0f;
	}
}

/* Masked loads never touch memory of masked-off lanes, so edges need no copies. */
SDI_AVX512 static void run_avx512(float *o, const float *row, int64_t ix0, int64_t len, int64_t w,
				  int64_t stride)
{
	if (stride == 1) {
		for (int64_t j0 = 0; j0 < len; j0 += 16) {
			int64_t b = ix0 + j0;
			__mmask16 lm = sdi_mask16(-b, w - b) & sdi_mask16(0, len - j0);
			__m512 v = _mm512_maskz_loadu_ps(lm, row + b);
			_mm512_mask_storeu_ps(o + j0, sdi_mask16(0, len - j0), v);
		}
		return;
	}
	if (stride == 2) {
		const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6,
						      4, 2, 0);
		for (int64_t j0 = 0; j0 < len; j0 += 16) {
			int64_t b = ix0 + 2 * j0, n = 2 * (len - j0) - 1; /* inputs used: [b, b+n) */
			__m512 lo = _mm512_maskz_loadu_ps(sdi_mask16(-b, w - b) & sdi_mask16(0, n), row + b);
			__m512 hi = _mm512_maskz_loadu_ps(sdi_mask16(-b - 16, w - b - 16) & sdi_mask16(0, n - 16),
							  row + b + 16);
			_mm512_mask_storeu_ps(o + j0, sdi_mask16(0, len - j0),
					      _mm512_permutex2var_ps(lo, even, hi));
		}
		return;
	}
	run_portable(o, row, ix0, len, w, stride);
}

/* pack_b_im2col packs one NR panel of im2col(x): columns [j0, j0+nr), depth [p0, p0+kc). */
#define SDI_IM2COL_BODY(RUN) { \
	/* Split the panel's columns into runs that lie in one output row. */ \
	int64_t seg_j[SDI_NR], seg_len[SDI_NR], seg_oy[SDI_NR], seg_ox[SDI_NR]; \
	int nseg = 0; \
	for (int64_t j = 0; j < nr;) { \
		int64_t pos = j0 + j, oy = pos / q->wo, ox = pos % q->wo; \
		int64_t len = q->wo - ox < nr - j ? q->wo - ox : nr - j; \
		seg_j[nseg] = j, seg_len[nseg] = len, seg_oy[nseg] = oy, seg_ox[nseg] = ox; \
		nseg++; \
		j += len; \
	} \
	int64_t khw = q->kh * q->kw; \
	int64_t ci = p0 / khw, r = p0 % khw, ky = r / q->kw, kx = r % q->kw; \
	for (int64_t p = 0; p < kc; p++) { \
		float *dr = d + p * SDI_NR; \
		const float *plane = q->x + ci * q->h * q->w; \
		for (int s = 0; s < nseg; s++) { \
			float *o = dr + seg_j[s]; \
			int64_t len = seg_len[s]; \
			int64_t iy = seg_oy[s] * q->stride - q->pt + ky; \
			if (iy < 0 || iy >= q->h) { \
				memset(o, 0, (size_t)len * sizeof(float)); \
				continue; \
			} \
			const float *row = plane + iy * q->w; \
			RUN(o, row, seg_ox[s] * q->stride - q->pl + kx, len, q->w, q->stride); \
		} \
		for (int64_t j = nr; j < SDI_NR; j++) \
			dr[j] = 0; \
		if (++kx == q->kw) { \
			kx = 0; \
			if (++ky == q->kh) \
				ky = 0, ci++; \
		} \
	} \
}

static void pack_b_im2col_portable(const sdi_conv_geo *q, float *d, int64_t j0, int64_t nr,
				   int64_t p0, int64_t kc)
SDI_IM2COL_BODY(run_portable)

SDI_AVX512 static void pack_b_im2col_avx512(const sdi_conv_geo *q, float *d, int64_t j0,
					    int64_t nr, int64_t p0, int64_t kc)
SDI_IM2COL_BODY(run_avx512)

/* pack_b packs columns [j0, j0+nc) and depth [p0, p0+kc) of B into NR-column panels. */
static void pack_b(const sdi_gemm *g, sdi_ctx *x, int64_t img, int64_t j0, int64_t nc, int64_t p0,
		   int64_t kc)
{
	sdi_conv_geo geo;
	if (g->b_kind == SDI_B_IM2COL) {
		geo = *g->geo;
		geo.x += img * g->b_bstride;
	}
	for (int64_t jp = 0; jp < nc; jp += SDI_NR) {
		float *d = x->bpack + (jp / SDI_NR) * kc * SDI_NR;
		int64_t nr = nc - jp < SDI_NR ? nc - jp : SDI_NR;
		int64_t jj = j0 + jp;
		switch (g->b_kind) {
		case SDI_B_ROWS: {
			const float *b = (const float *)g->b + img * g->b_bstride;
			for (int64_t p = 0; p < kc; p++) {
				memcpy(d + p * SDI_NR, b + (p0 + p) * g->ldb + jj, (size_t)nr * sizeof(float));
				for (int64_t j = nr; j < SDI_NR; j++)
					d[p * SDI_NR + j] = 0;
			}
			break;
		}
		case SDI_B_TRANS: {
			size_t es = g->bdt == SD_F32 ? 4 : 2;
			for (int64_t h = 0; h < SDI_NR; h += 16) {
				int64_t rows = nr - h < 0 ? 0 : nr - h > 16 ? 16 : nr - h;
				const char *src = (const char *)g->b + ((jj + h) * g->ldb + p0) * es;
				x->tpack(src, g->bdt, g->ldb, rows, 16, kc, d + h, SDI_NR);
			}
			break;
		}
		default:
			x->im2col(&geo, d, jj, nr, p0, kc);
		}
	}
}

/* ---- driver ---- */

static void fill_bias(const sdi_gemm *g, float *c, int64_t ldc, int64_t i0, int64_t j0,
		      int64_t mr, int64_t nr)
{
	for (int64_t i = 0; i < mr; i++)
		for (int64_t j = 0; j < nr; j++)
			c[i * ldc + j] = (g->bias_m ? g->bias_m[i0 + i] : 0.0f) +
					 (g->bias_n ? g->bias_n[j0 + j] : 0.0f);
}

/*
 * merge_edge writes the mr x nr corner of the micro-kernel's tile x->tmp
 * into C at cp: seeded with the bias on the first depth block, added to C
 * on the others.
 */
static void merge_edge(const sdi_gemm *g, sdi_ctx *x, float *cp, int64_t i, int64_t j, int64_t mr,
		       int64_t nr, int first, int has_bias)
{
	if (first && has_bias)
		fill_bias(g, cp, g->ldc, i, j, mr, nr);
	for (int64_t a = 0; a < mr; a++)
		for (int64_t b = 0; b < nr; b++) {
			float v = x->tmp[a * SDI_NR + b];
			if (!first || has_bias)
				v += cp[a * g->ldc + b];
			cp[a * g->ldc + b] = v;
		}
}

static void gemm_tile(const sdi_gemm *g, sdi_ctx *x, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
	int64_t npc = (g->k + SDI_KC_MAX - 1) / SDI_KC_MAX;
	int64_t kcb = (g->k + npc - 1) / npc;
	int has_bias = g->bias_m || g->bias_n;
	int64_t batch = g->batch > 1 ? g->batch : 1;
	int whole_a = batch > 1; /* pack all of this thread's A once per depth block */
	int64_t ncb = nc_block(g);
	for (int64_t jc = n0; jc < n1; jc += ncb) {
		int64_t nc = n1 - jc < ncb ? n1 - jc : ncb;
		for (int64_t pc = 0; pc < g->k; pc += kcb) {
			int64_t kc = g->k - pc < kcb ? g->k - pc : kcb;
			int first = pc == 0;
			if (whole_a)
				pack_a(g, x, x->apack, m0, m1 - m0, pc, kc);
			for (int64_t img = 0; img < batch; img++) {
				float *c = g->c + img * g->c_bstride;
				pack_b(g, x, img, jc, nc, pc, kc);
				for (int64_t ic = m0; ic < m1; ic += SDI_MC) {
					int64_t mc = m1 - ic < SDI_MC ? m1 - ic : SDI_MC;
					const float *ablk = x->apack;
					if (whole_a)
						ablk += ((ic - m0) / SDI_MR) * kc * SDI_MR;
					else
						pack_a(g, x, x->apack, ic, mc, pc, kc);
					for (int64_t jr = 0; jr < nc; jr += SDI_NR) {
						int64_t nr = nc - jr < SDI_NR ? nc - jr : SDI_NR;
						const float *bp = x->bpack + (jr / SDI_NR) * kc * SDI_NR;
						for (int64_t ir = 0; ir < mc; ir += SDI_MR) {
							int64_t mr = mc - ir < SDI_MR ? mc - ir : SDI_MR;
							const float *ap = ablk + (ir / SDI_MR) * kc * SDI_MR;
							int64_t i = ic + ir, j = jc + jr;
							float *cp = c + i * g->ldc + j;
							if (mr == SDI_MR && nr == SDI_NR) {
								if (first && has_bias)
									fill_bias(g, cp, g->ldc, i, j, mr, nr);
								x->ukr(kc, ap, bp, cp, g->ldc, !first || has_bias);
								continue;
							}
							x->ukr(kc, ap, bp, x->tmp, SDI_NR, 0);
							merge_edge(g, x, cp, i, j, mr, nr, first, has_bias);
						}
					}
				}
			}
		}
	}
}

/*
 * pack_a16 packs rows [i0, i0+mc), depth [p0, p0+kc) of A into bf16 MR-row
 * panels of kcp = kc rounded up to even: f32 rows directly, anything else
 * through the f32 packers and a conversion.
 */
static void pack_a16(const sdi_gemm *g, sdi_ctx *x, uint16_t *dst, int64_t i0, int64_t mc,
		     int64_t p0, int64_t kc)
{
	int64_t kcp = (kc + 1) & ~(int64_t)1;
	if (g->a_kind == SDI_A_ROWS && g->adt == SD_F32) {
		for (int64_t ip = 0; ip < mc; ip += SDI_MR) {
			int64_t mr = mc - ip < SDI_MR ? mc - ip : SDI_MR;
			const float *src = (const float *)g->a + (i0 + ip) * g->lda + p0;
			sdi_tpack_bf16(src, g->lda, mr, SDI_MR, kc, dst + (ip / SDI_MR) * kcp * SDI_MR, SDI_MR);
		}
		return;
	}
	pack_a(g, x, x->apack, i0, mc, p0, kc);
	for (int64_t ip = 0; ip < mc; ip += SDI_MR)
		sdi_panel_bf16(x->apack + (ip / SDI_MR) * kc * SDI_MR, SDI_MR, kc, SDI_MR,
			       dst + (ip / SDI_MR) * kcp * SDI_MR);
}

/*
 * ukr_bf16_tile runs the bf16 micro-kernel on one MR x NR tile of C at cp
 * (mr x nr valid), seeding it with the bias on the first depth block.
 */
static void ukr_bf16_tile(const sdi_gemm *g, sdi_ctx *x, int64_t k2, const uint16_t *ap,
			  const uint16_t *bp, float *cp, int64_t i, int64_t j, int64_t mr, int64_t nr,
			  int first, int has_bias)
{
	if (mr == SDI_MR && nr == SDI_NR) {
		if (first && has_bias)
			fill_bias(g, cp, g->ldc, i, j, mr, nr);
		sdi_ukr_bf16(k2, ap, bp, cp, g->ldc, !first || has_bias);
		return;
	}
	sdi_ukr_bf16(k2, ap, bp, x->tmp, SDI_NR, 0);
	merge_edge(g, x, cp, i, j, mr, nr, first, has_bias);
}

/*
 * gemm_tile_cached_b is gemm_tile_bf16 for one image when B is a weight
 * whose panels all come from the cache (linear layers): with nothing to
 * pack for B, the depth blocks run innermost, so a row block of C stays in
 * cache across them instead of going out and back once per depth block
 * (4096x1280x320: C is 5 MB, read and written 4 times before). Used when
 * the thread's whole B fits in L2 beside it (up to 768 KiB of panels);
 * larger weights keep the usual order, which streams one depth block of B
 * per row block.
 */
static void gemm_tile_cached_b(const sdi_gemm *g, sdi_ctx *x, int64_t m0, int64_t m1, int64_t n0,
			       int64_t n1)
{
	int64_t npc = (g->k + SDI_KC_MAX - 1) / SDI_KC_MAX;
	int64_t kcb = (g->k + npc - 1) / npc, kcbp = (kcb + 1) & ~(int64_t)1;
	int has_bias = g->bias_m || g->bias_n;
	int64_t npan = (g->n + SDI_NR - 1) / SDI_NR;
	int64_t ncb = nc_block(g);
	for (int64_t jc = n0; jc < n1; jc += ncb) {
		int64_t nc = n1 - jc < ncb ? n1 - jc : ncb;
		for (int64_t ic = m0; ic < m1; ic += SDI_MC) {
			int64_t mc = m1 - ic < SDI_MC ? m1 - ic : SDI_MC;
			int64_t bi = 0;
			for (int64_t pc = 0; pc < g->k; pc += kcb, bi++) {
				int64_t kc = g->k - pc < kcb ? g->k - pc : kcb, kcp = (kc + 1) & ~(int64_t)1;
				pack_a16(g, x, x->a16, ic, mc, pc, kc);
				const uint16_t *bblk = x->wb + (bi * npan + jc / SDI_NR) * kcbp * SDI_NR;
				for (int64_t jr = 0; jr < nc; jr += SDI_NR) {
					int64_t nr = nc - jr < SDI_NR ? nc - jr : SDI_NR;
					const uint16_t *bp = bblk + (jr / SDI_NR) * kcbp * SDI_NR;
					for (int64_t ir = 0; ir < mc; ir += SDI_MR) {
						int64_t mr = mc - ir < SDI_MR ? mc - ir : SDI_MR;
						int64_t i = ic + ir, j = jc + jr;
						ukr_bf16_tile(g, x, kcp / 2, x->a16 + (ir / SDI_MR) * kcp * SDI_MR, bp,
							      g->c + i * g->ldc + j, i, j, mr, nr, pc == 0, has_bias);
					}
				}
			}
		}
	}
}

/*
 * gemm_tile_bf16 is gemm_tile for bf16 runs: A and B panels are packed in f32
 * as above, then converted to bf16 pairs (or taken whole from the weight
 * cache), and the VDPBF16PS micro-kernel runs over pairs of k.
 */
static void gemm_tile_bf16(const sdi_gemm *g, sdi_ctx *x, int64_t m0, int64_t m1, int64_t n0,
			   int64_t n1)
{
	int64_t npc = (g->k + SDI_KC_MAX - 1) / SDI_KC_MAX;
	int64_t kcb = (g->k + npc - 1) / npc, kcbp = (kcb + 1) & ~(int64_t)1;
	int has_bias = g->bias_m || g->bias_n;
	int64_t batch = g->batch > 1 ? g->batch : 1;
	int whole_a = batch > 1;
	int64_t mpan = (g->m + SDI_MR - 1) / SDI_MR, npan = (g->n + SDI_NR - 1) / SDI_NR;
	int64_t ncb = nc_block(g);
	for (int64_t jc = n0; jc < n1; jc += ncb) {
		int64_t nc = n1 - jc < ncb ? n1 - jc : ncb;
		int64_t bi = 0;
		for (int64_t pc = 0; pc < g->k; pc += kcb, bi++) {
			int64_t kc = g->k - pc < kcb ? g->k - pc : kcb, kcp = (kc + 1) & ~(int64_t)1;
			int first = pc == 0;
			const uint16_t *acache = x->wa ? x->wa + bi * mpan * kcbp * SDI_MR : NULL;
			if (!acache && whole_a)
				pack_a16(g, x, x->a16, m0, m1 - m0, pc, kc);
			for (int64_t img = 0; img < batch; img++) {
				float *c = g->c + img * g->c_bstride;
				const uint16_t *bblk;
				int64_t bstride;
				if (x->wb) {
					bblk = x->wb + (bi * npan + jc / SDI_NR) * kcbp * SDI_NR;
					bstride = kcbp * SDI_NR;
				} else {
					pack_b(g, x, img, jc, nc, pc, kc);
					for (int64_t jp = 0; jp < nc; jp += SDI_NR)
						sdi_panel_bf16(x->bpack + (jp / SDI_NR) * kc * SDI_NR, SDI_NR, kc,
							       SDI_NR, x->b16 + (jp / SDI_NR) * kcp * SDI_NR);
					bblk = x->b16;
					bstride = kcp * SDI_NR;
				}
				for (int64_t ic = m0; ic < m1; ic += SDI_MC) {
					int64_t mc = m1 - ic < SDI_MC ? m1 - ic : SDI_MC;
					const uint16_t *ablk;
					int64_t astride = kcp * SDI_MR;
					if (acache) {
						ablk = acache + (ic / SDI_MR) * kcbp * SDI_MR;
						astride = kcbp * SDI_MR;
					} else if (whole_a) {
						ablk = x->a16 + ((ic - m0) / SDI_MR) * kcp * SDI_MR;
					} else {
						pack_a16(g, x, x->a16, ic, mc, pc, kc);
						ablk = x->a16;
					}
					for (int64_t jr = 0; jr < nc; jr += SDI_NR) {
						int64_t nr = nc - jr < SDI_NR ? nc - jr : SDI_NR;
						const uint16_t *bp = bblk + (jr / SDI_NR) * bstride;
						for (int64_t ir = 0; ir < mc; ir += SDI_MR) {
							int64_t mr = mc - ir < SDI_MR ? mc - ir : SDI_MR;
							const uint16_t *ap = ablk + (ir / SDI_MR) * astride;
							int64_t i = ic + ir, j = jc + jr;
							float *cp = c + i * g->ldc + j;
							ukr_bf16_tile(g, x, kcp / 2, ap, bp, cp, i, j, mr, nr, first, has_bias);
						}
					}
				}
			}
		}
	}
}

/* split chooses a tm x tn grid of nt threads for an m x n output. */
static void split(int64_t m, int64_t n, int nt, int *tm, int *tn)
{
	int64_t mp = (m + SDI_MR - 1) / SDI_MR, np = (n + SDI_NR - 1) / SDI_NR;
	int64_t best = -1;
	*tm = 1, *tn = 1;
	for (int a = 1; a <= nt; a++) {
		if (nt % a)
			continue;
		int b = nt / a;
		if (a > mp || b > np)
			continue;
		/* padded work of the largest rectangle; ties favour splitting n. */
		int64_t cost = ((mp + a - 1) / a) * SDI_MR * (((np + b - 1) / b) * SDI_NR) * 4 + a;
		if (best < 0 || cost < best)
			best = cost, *tm = a, *tn = b;
	}
}

int sdi_gemm_run(const sdi_gemm *g)
{
	if (g->m <= 0 || g->n <= 0)
		return SD_OK;
	if (g->k <= 0) {
		for (int64_t img = 0; img < (g->batch > 1 ? g->batch : 1); img++)
			for (int64_t i = 0; i < g->m; i++)
				fill_bias(g, g->c + img * g->c_bstride + i * g->ldc, g->ldc, i, 0, 1, g->n);
		return SD_OK;
	}
	int nt = g->nthreads > 0 ? g->nthreads : sdi_threads();
	double work = (double)g->m * (double)g->n * (double)g->k * (double)(g->batch > 1 ? g->batch : 1);
	if (work < 1e6)
		nt = 1;
	int tm, tn;
	split(g->m, g->n, nt, &tm, &tn);
	nt = tm * tn;
	int64_t mp = (g->m + SDI_MR - 1) / SDI_MR, np = (g->n + SDI_NR - 1) / SDI_NR;
	int failed = 0;
	sdi_ukr_fn ukr = sdi_get_ukr();
	sdi_cvt_fn cvt = sdi_get_cvt();
	int bf16 = sdi_bf16();
	const uint16_t *wa = NULL, *wb = NULL;
	if (bf16) {
		int64_t npc = (g->k + SDI_KC_MAX - 1) / SDI_KC_MAX, kcb = (g->k + npc - 1) / npc;
		if (g->weight == SDI_W_A && g->a_kind == SDI_A_ROWS)
			wa = sdi_wcache(g, SDI_W_A, kcb);
		if (g->weight == SDI_W_B && g->b_kind == SDI_B_TRANS)
			wb = sdi_wcache(g, SDI_W_B, kcb);
	}
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
		int t = 0;
#ifdef _OPENMP
		t = omp_get_thread_num();
#endif
		int ti = t / tn, tj = t % tn;
		int64_t m0 = (mp * ti / tm) * SDI_MR, m1 = (mp * (ti + 1) / tm) * SDI_MR;
		int64_t n0 = (np * tj / tn) * SDI_NR, n1 = (np * (tj + 1) / tn) * SDI_NR;
		if (m1 > g->m)
			m1 = g->m;
		if (n1 > g->n)
			n1 = g->n;
		int64_t kc = g->k < SDI_KC_MAX ? g->k : SDI_KC_MAX;
		int64_t mc = m1 - m0 < SDI_MC || g->batch > 1 ? m1 - m0 : SDI_MC;
		int64_t nc = n1 - n0 < nc_block(g) ? n1 - n0 : nc_block(g);
		mc = (mc + SDI_MR - 1) / SDI_MR * SDI_MR;
		nc = (nc + SDI_NR - 1) / SDI_NR * SDI_NR;
		/* Thread-local scratch, kept between calls: no page faults per call. */
		int64_t asz = (kc * mc + 15) & ~(int64_t)15, bsz = (kc * nc + 15) & ~(int64_t)15;
		float *s = sdi_scratch(0, sizeof(float) * (size_t)(asz + bsz + SDI_MR * SDI_NR + kc));
		sdi_ctx x = {ukr, cvt, sdi_get_tpack(),
			     sdi_isa() == SD_ISA_AVX512 ? pack_b_im2col_avx512 : pack_b_im2col_portable, s,
			     NULL, NULL, NULL, NULL, NULL, NULL, NULL};
		if (!s) {
#pragma omp atomic write
			failed = 1;
		} else if (m0 < m1 && n0 < n1) {
			x.bpack = s + asz; /* 64-byte aligned: the kernels load B aligned */
			x.tmp = x.bpack + bsz;
			x.row = x.tmp + SDI_MR * SDI_NR;
			if (bf16) {
				int64_t kcp = (kc + 1) & ~(int64_t)1;
				x.a16 = sdi_scratch(4, sizeof(uint16_t) * (size_t)(kcp * (mc + nc) + 64));
				x.b16 = x.a16 ? x.a16 + kcp * mc : NULL;
				x.wa = wa, x.wb = wb;
				if (!x.a16) {
#pragma omp atomic write
					failed = 1;
				} else if (wb && g->batch <= 1 && g->k * (n1 - n0) * 2 <= (768 << 10)) {
					gemm_tile_cached_b(g, &x, m0, m1, n0, n1);
				} else {
					gemm_tile_bf16(g, &x, m0, m1, n0, n1);
				}
			} else {
				gemm_tile(g, &x, m0, m1, n0, n1);
			}
		}
		sdi_work_end(w0);
	}
	return failed ? SD_ERR_NOMEM : SD_OK;
}

/* ---- entry points ---- */

int sd_linear(float *y, const float *x, const void *w, int wdt, const void *b, int bdt,
	      int64_t m, int64_t n, int64_t k, char *msg, int msglen)
{
	if (m < 0 || n < 0 || k < 0)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "linear: negative size m=%lld n=%lld k=%lld",
				(long long)m, (long long)n, (long long)k);
	if (!sdi_dtype_ok(wdt) || (b && !sdi_dtype_ok(bdt)))
		return sdi_fail(msg, msglen, SD_ERR_DTYPE, "linear: bad dtype %d/%d", wdt, bdt);
	if (m * n > 0 && (!y || (k > 0 && (!x || !w))))
		return sdi_fail(msg, msglen, SD_ERR_ARG, "linear: null pointer");
	float *bias = sdi_vec_f32(b, bdt, n);
	if (b && !bias)
		return sdi_fail(msg, msglen, SD_ERR_NOMEM, "linear: out of memory");
	sdi_gemm g = {.m = m, .n = n, .k = k, .a = x, .adt = SD_F32, .lda = k,
		      .b_kind = SDI_B_TRANS, .b = w, .bdt = wdt, .ldb = k,
		      .c = y, .ldc = n, .bias_n = bias, .weight = SDI_W_B};
	int st = sdi_gemm_run(&g);
	free(bias);
	if (st)
		return sdi_fail(msg, msglen, st, "linear: out of memory");
	return SD_OK;
}

int sd_matmul_f32(float *y, const float *a, const float *b, int64_t m, int64_t n, int64_t k,
		  char *msg, int msglen)
{
	if (m < 0 || n < 0 || k < 0)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "matmul: negative size");
	if (m * n > 0 && (!y || (k > 0 && (!a || !b))))
		return sdi_fail(msg, msglen, SD_ERR_ARG, "matmul: null pointer");
	sdi_gemm g = {.m = m, .n = n, .k = k, .a = a, .adt = SD_F32, .lda = k,
		      .b_kind = SDI_B_ROWS, .b = b, .bdt = SD_F32, .ldb = n, .c = y, .ldc = n};
	if (sdi_gemm_run(&g))
		return sdi_fail(msg, msglen, SD_ERR_NOMEM, "matmul: out of memory");
	return SD_OK;
}
