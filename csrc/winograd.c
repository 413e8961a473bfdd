/*
 * winograd.c - 3x3, stride 1, pad 1 convolutions of bf16 runs by Winograd's
 * minimal filtering F(2x2, 3x3) (Lavin and Gray, "Fast Algorithms for
 * Convolutional Neural Networks", 2016). Each 2x2 output tile is
 *
 *   Y = Aᵀ [ Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B) ] A
 *
 * for the 4x4 input tile d_c of each channel (rows and columns from 2ty-1
 * and 2tx-1; zero outside the image) and the 3x3 kernel g_c. For each of
 * the 16 positions ξ of the transformed tile, the sum over channels is a
 * matrix product M_ξ[O, tiles] = U_ξ[O, C]·V_ξ[C, tiles]: 16 products of C
 * multiply-adds per output tile and channel pair instead of 36, 2.25x fewer.
 *
 * U = G g Gᵀ is computed once per weight (in f32, then rounded to bf16)
 * and cached as micro-kernel A panels; V is computed per block of 32
 * tiles (two runs of 16 along tile rows), straight into bf16 B panels, and each M_ξ tile
 * from the bf16 micro-kernel is folded into the block's output tiles
 * (Aᵀ·A has entries 0 and ±1) in f32 before the next ξ. Rounding V and U
 * to bf16 costs about what rounding x and g does in the direct product, on
 * sums of up to 4 (V) and 9 (U, scaled by 1/4) terms.
 */
#include "gemm.h"

#include <immintrin.h>

#define SDI_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,avx512bf16")))

#define WINO_KIND (-3) /* weight cache kind of the U panels */

/* Aᵀ of F(2x2, 3x3): output i of a tile row takes transformed positions u with a[i][u]. */
static const float wino_a[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};

typedef struct {
	const void *w;
	int dt;
	int64_t o, c, c2, npan;
} wino_w;

static uint16_t bf16_rne(float f)
{
	uint32_t u = sdi_f32_bits(f);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return 0x7fc0;
	u += 0x7fff + ((u >> 16) & 1);
	return (uint16_t)(u >> 16);
}

/*
 * fill_u writes U_ξ = G g Gᵀ of every (o, c) as bf16 A panels:
 * [ξ][o/MR][c2][MR][2] with c2 = C rounded up to pairs; rows past O and
 * the channel past an odd C stay zero (the mapping is zero-filled).
 */
/* wino_u computes U = G g Gᵀ (4x4, row-major) of one 3x3 kernel g. */
static inline void wino_u(const float *g, float *u)
{
	float gg[4][3];
	for (int j = 0; j < 3; j++) { /* G g: G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1] */
		gg[0][j] = g[j];
		gg[1][j] = 0.5f * (g[j] + g[3 + j] + g[6 + j]);
		gg[2][j] = 0.5f * (g[j] - g[3 + j] + g[6 + j]);
		gg[3][j] = g[6 + j];
	}
	for (int r = 0; r < 4; r++) {
		u[r * 4 + 0] = gg[r][0];
		u[r * 4 + 1] = 0.5f * (gg[r][0] + gg[r][1] + gg[r][2]);
		u[r * 4 + 2] = 0.5f * (gg[r][0] - gg[r][1] + gg[r][2]);
		u[r * 4 + 3] = gg[r][2];
	}
}

static int fill_u(void *ctx, uint16_t *dst)
{
	const wino_w *W = ctx;
	sdi_cvt_fn cvt = sdi_get_cvt();
	uint32_t *d32 = (uint32_t *)dst; /* one word = the bf16 pair of channels (2q, 2q+1) */
	int nt = sdi_threads();
	int failed = 0;
#pragma omp parallel num_threads(nt) if (W->o * W->c > 4096)
	{
		int64_t w0 = sdi_work_begin();
		int64_t rl = W->c * 9 + 9; /* floats per output channel, with a zero channel past an odd C */
		float *rows = sdi_scratch(5, sizeof(float) * (size_t)(SDI_MR * rl));
		if (!rows) {
#pragma omp atomic write
			failed = 1;
		}
		/*
		 * A task is one panel of MR output channels, so that each thread
		 * writes whole cache lines of its own panels (channel pairs q
		 * outermost, the panel's rows innermost: consecutive words).
		 */
#pragma omp for schedule(dynamic, 1) nowait
		for (int64_t ip = 0; ip < W->npan; ip++) {
			if (!rows)
				continue;
			int mr = (int)(W->o - ip * SDI_MR < SDI_MR ? W->o - ip * SDI_MR : SDI_MR);
			for (int i = 0; i < mr; i++) { /* the kernels in f32, one vector pass a row */
				cvt(W->w, W->dt, (ip * SDI_MR + i) * W->c * 9, W->c * 9, rows + i * rl);
				memset(rows + i * rl + W->c * 9, 0, 9 * sizeof(float));
			}
			for (int64_t q = 0; q < W->c2; q++)
				for (int i = 0; i < mr; i++) {
					float u0[16], u1[16];
					wino_u(rows + i * rl + 2 * q * 9, u0);
					wino_u(rows + i * rl + (2 * q + 1) * 9, u1);
					for (int xi = 0; xi < 16; xi++)
						d32[((xi * W->npan + ip) * W->c2 + q) * SDI_MR + i] =
							(uint32_t)bf16_rne(u0[xi]) | (uint32_t)bf16_rne(u1[xi]) << 16;
				}
		}
		sdi_work_end(w0);
	}
	return !failed;
}

/* 16 floats of row r from column b on, zero outside [0, w). */
SDI_BF16 static inline __m512 wload(const float *r, int64_t b, int64_t w)
{
	return _mm512_maskz_loadu_ps(sdi_mask16(-b, w - b), r + b);
}

/*
 * A block's 32 tiles are two runs of up to 16 tiles along a tile row, one
 * per half of the micro-kernel's column panel (rows of 16 or more tiles
 * give whole runs; a row's last run may be short, a block's second run may
 * be empty).
 */
typedef struct {
	int64_t ty, tx0;
	int n; /* tiles in the run, 0 to 16 */
	/*
	 * gather: the run is tiles t0 .. t0+n-1 in row-major tile order, which
	 * may span tile rows (rows of fewer than 16 tiles); its inputs are
	 * gathered and its outputs scattered lane by lane, with the tile row
	 * and column of each lane in ty16 and tx16.
	 */
	int gather;
	int32_t ty16[16], tx16[16];
} wino_run;

/*
 * wino_input writes V_ξ for the block's tiles of image x [C, H, W] as bf16
 * B panels vb [ξ][c2][NR][2]; lanes of missing tiles are zero.
 */
SDI_BF16 static void wino_input(const float *x, int64_t c, int64_t h, int64_t w, const wino_run *run,
				int64_t c2, uint16_t *vb)
{
	const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
	const __m512i od = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
	for (int64_t cp = 0; cp < c2; cp++) {
		for (int hh = 0; hh < 2; hh++) {
			__mmask16 live = sdi_mask16(0, run[hh].n);
			int64_t ty = run[hh].ty;
			__m512 V[2][16];
			for (int ci = 0; ci < 2; ci++) {
				int64_t ch = 2 * cp + ci;
				if (ch >= c || !live) {
					for (int xi = 0; xi < 16; xi++)
						V[ci][xi] = _mm512_setzero_ps();
					continue;
				}
				const float *plane = x + ch * h * w;
				int64_t b = 2 * run[hh].tx0 - 1;
				__m512 t[4][4];
				for (int k = 0; k < 4; k++) {
					int64_t row = 2 * ty - 1 + k;
					__m512 d0, d1, d2, d3;
					if (run[hh].gather) {
						__m512 dv[4];
						__m512i ty16 = _mm512_loadu_si512(run[hh].ty16);
						__m512i tx16 = _mm512_loadu_si512(run[hh].tx16);
						__m512i rv = _mm512_add_epi32(_mm512_add_epi32(ty16, ty16), _mm512_set1_epi32(k - 1));
						__mmask16 rm = live & _mm512_cmpge_epi32_mask(rv, _mm512_setzero_si512()) &
							       _mm512_cmplt_epi32_mask(rv, _mm512_set1_epi32((int)h));
						for (int sc = 0; sc < 4; sc++) {
							__m512i cv = _mm512_add_epi32(_mm512_add_epi32(tx16, tx16), _mm512_set1_epi32(sc - 1));
							__mmask16 m = rm & _mm512_cmpge_epi32_mask(cv, _mm512_setzero_si512()) &
								      _mm512_cmplt_epi32_mask(cv, _mm512_set1_epi32((int)w));
							__m512i idx = _mm512_add_epi32(_mm512_mullo_epi32(rv, _mm512_set1_epi32((int)w)), cv);
							dv[sc] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, plane, 4);
						}
						d0 = dv[0], d1 = dv[1], d2 = dv[2], d3 = dv[3];
					} else if (row < 0 || row >= h) {
						d0 = d1 = d2 = d3 = _mm512_setzero_ps();
					} else {
						const float *r = plane + row * w;
						__m512 p0 = wload(r, b, w), p1 = wload(r, b + 16, w);
						__m512 q0 = wload(r, b + 2, w), q1 = wload(r, b + 18, w);
						d0 = _mm512_permutex2var_ps(p0, ev, p1); /* column 2tx-1 */
						d1 = _mm512_permutex2var_ps(p0, od, p1); /* 2tx */
						d2 = _mm512_permutex2var_ps(q0, ev, q1); /* 2tx+1 */
						d3 = _mm512_permutex2var_ps(q0, od, q1); /* 2tx+2 */
					}
					/* d·B by columns: Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1] */
					t[k][0] = _mm512_sub_ps(d0, d2);
					t[k][1] = _mm512_add_ps(d1, d2);
					t[k][2] = _mm512_sub_ps(d2, d1);
					t[k][3] = _mm512_sub_ps(d1, d3);
				}
				for (int v = 0; v < 4; v++) { /* Bᵀ·(d B) by rows */
					V[ci][0 * 4 + v] = _mm512_maskz_sub_ps(live, t[0][v], t[2][v]);
					V[ci][1 * 4 + v] = _mm512_maskz_add_ps(live, t[1][v], t[2][v]);
					V[ci][2 * 4 + v] = _mm512_maskz_sub_ps(live, t[2][v], t[1][v]);
					V[ci][3 * 4 + v] = _mm512_maskz_sub_ps(live, t[1][v], t[3][v]);
				}
			}
			for (int xi = 0; xi < 16; xi++) {
				__m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(V[0][xi]));
				__m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(V[1][xi]));
				_mm512_storeu_si512(vb + (xi * c2 + cp) * 2 * SDI_NR + 32 * hh,
						    _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
			}
		}
	}
}

/*
 * wino_block computes the block's output tiles of one image (y [O, H, W])
 * from its V panels vb and the U panels u.
 */
SDI_BF16 static void wino_block(const uint16_t *u, const uint16_t *vb, const float *bias, float *y,
				int64_t o, int64_t h, int64_t w, const wino_run *run, int64_t c2,
				int64_t npan, float *tmp, float *acc)
{
	const __m512i il_lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
	const __m512i il_hi = _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
	for (int64_t ip = 0; ip < npan; ip++) {
		memset(acc, 0, sizeof(float) * 4 * SDI_MR * SDI_NR);
		for (int xi = 0; xi < 16; xi++) {
			sdi_ukr_bf16(c2, u + (xi * npan + ip) * c2 * 2 * SDI_MR, vb + xi * c2 * 2 * SDI_NR, tmp,
				     SDI_NR, 0);
			int uu = xi / 4, vv = xi % 4;
			for (int ij = 0; ij < 4; ij++) {
				float cf = wino_a[ij / 2][uu] * wino_a[ij % 2][vv];
				if (cf == 0)
					continue;
				__m512 f = _mm512_set1_ps(cf);
				float *a = acc + ij * SDI_MR * SDI_NR;
				for (int e = 0; e < SDI_MR * SDI_NR; e += 16)
					_mm512_storeu_ps(a + e, _mm512_fmadd_ps(f, _mm512_loadu_ps(tmp + e),
										 _mm512_loadu_ps(a + e)));
			}
		}
		for (int r = 0; r < SDI_MR && ip * SDI_MR + r < o; r++) {
			int64_t oc = ip * SDI_MR + r;
			__m512 bv = _mm512_set1_ps(bias ? bias[oc] : 0.0f);
			for (int hh = 0; hh < 2; hh++) {
				if (run[hh].n == 0)
					continue;
				if (run[hh].gather) {
					__mmask16 live = sdi_mask16(0, run[hh].n);
					__m512i ty16 = _mm512_loadu_si512(run[hh].ty16);
					__m512i tx16 = _mm512_loadu_si512(run[hh].tx16);
					for (int ij = 0; ij < 4; ij++) {
						__m512i rv = _mm512_add_epi32(_mm512_add_epi32(ty16, ty16), _mm512_set1_epi32(ij / 2));
						__m512i cv = _mm512_add_epi32(_mm512_add_epi32(tx16, tx16), _mm512_set1_epi32(ij % 2));
						__mmask16 m = live & _mm512_cmplt_epi32_mask(rv, _mm512_set1_epi32((int)h)) &
							      _mm512_cmplt_epi32_mask(cv, _mm512_set1_epi32((int)w));
						__m512i idx = _mm512_add_epi32(_mm512_mullo_epi32(rv, _mm512_set1_epi32((int)w)), cv);
						__m512 v = _mm512_add_ps(_mm512_loadu_ps(acc + ij * SDI_MR * SDI_NR + r * SDI_NR + 16 * hh), bv);
						_mm512_mask_i32scatter_ps(y + oc * h * w, m, idx, v, 4);
					}
					continue;
				}
				int64_t ty = run[hh].ty, base = 2 * run[hh].tx0; /* first output column */
				int64_t ncols = 2 * (int64_t)run[hh].n;
				if (ncols > w - base)
					ncols = w - base;
				for (int i = 0; i < 2 && 2 * ty + i < h; i++) {
					const float *a0 = acc + (2 * i) * SDI_MR * SDI_NR + r * SDI_NR + 16 * hh;
					const float *a1 = a0 + SDI_MR * SDI_NR;
					__m512 y0 = _mm512_add_ps(_mm512_loadu_ps(a0), bv);
					__m512 y1 = _mm512_add_ps(_mm512_loadu_ps(a1), bv);
					float *dst = y + (oc * h + 2 * ty + i) * w + base;
					_mm512_mask_storeu_ps(dst, sdi_mask16(0, ncols), _mm512_permutex2var_ps(y0, il_lo, y1));
					_mm512_mask_storeu_ps(dst + 16, sdi_mask16(0, ncols - 16),
							      _mm512_permutex2var_ps(y0, il_hi, y1));
				}
			}
		}
	}
}

int sdi_conv3x3_wino(float *y, const float *x, const void *w, int wdt, const float *bias,
		     int64_t batch, int64_t c, int64_t h, int64_t wd, int64_t o)
{
	const char *env = getenv("GOSD_WINOGRAD");
	int64_t th = (h + 1) / 2, tw = (wd + 1) / 2;
	/*
	 * Rows of fewer than 16 tiles take gathered runs, and there (the
	 * UNet's 16x16 and 8x8 levels at 512x512) the weights are the largest:
	 * U would add 7/9 of them to memory (SD 1.5: ~0.6 GB). They keep the
	 * implicit GEMM unless GOSD_WINOGRAD=all.
	 */
	int all = env && strcmp(env, "all") == 0;
	if (!sdi_bf16() || (env && strcmp(env, "0") == 0) || (tw < 16 && !all) || c < 2 || batch < 1)
		return -1;
	int gather = tw < 16; /* runs span tile rows: gathered lane by lane */
	wino_w W = {w, wdt, o, c, (c + 1) / 2, (o + SDI_MR - 1) / SDI_MR};
	size_t bytes = sizeof(uint16_t) * (size_t)(16 * W.npan * W.c2 * SDI_MR * 2);
	const uint16_t *u = sdi_wcache_fill(w, wdt, WINO_KIND, o, c, o * c * 9, bytes, fill_u, &W);
	if (!u)
		return -1;
	int64_t segs = (tw + 15) / 16, runs = gather ? (th * tw + 15) / 16 : th * segs; /* per image */
	int64_t per = (runs + 1) / 2, jobs = batch * per;
	int nt = sdi_threads();
	if (nt > jobs)
		nt = (int)jobs;
	int failed = 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
		uint16_t *vb = sdi_scratch(4, sizeof(uint16_t) * (size_t)(16 * W.c2 * 2 * SDI_NR));
		float *tmp = sdi_scratch(0, sizeof(float) * (size_t)(5 * SDI_MR * SDI_NR));
		if (!vb || !tmp) {
#pragma omp atomic write
			failed = 1;
		}
#pragma omp for schedule(dynamic, 1) nowait
		for (int64_t j = 0; j < jobs; j++) {
			if (!vb || !tmp)
				continue;
			int64_t n = j / per;
			wino_run run[2];
			for (int hh = 0; hh < 2; hh++) {
				int64_t r = 2 * (j % per) + hh;
				run[hh].gather = gather;
				if (gather) {
					int64_t t0 = 16 * r, left = th * tw - t0;
					run[hh].n = r >= runs ? 0 : (int)(left < 16 ? left : 16);
					run[hh].ty = run[hh].tx0 = 0;
					for (int l = 0; l < 16; l++) {
						int64_t t = t0 + (l < run[hh].n ? l : 0);
						run[hh].ty16[l] = (int32_t)(t / tw), run[hh].tx16[l] = (int32_t)(t % tw);
					}
					continue;
				}
				run[hh].ty = r / segs, run[hh].tx0 = r % segs * 16;
				run[hh].n = r >= runs ? 0 : (int)(tw - run[hh].tx0 < 16 ? tw - run[hh].tx0 : 16);
			}
			wino_input(x + n * c * h * wd, c, h, wd, run, W.c2, vb);
			wino_block(u, vb, bias, y + n * o * h * wd, o, h, wd, run, W.c2, W.npan, tmp,
				   tmp + SDI_MR * SDI_NR);
		}
		sdi_work_end(w0);
	}
	return failed ? SD_ERR_NOMEM : SD_OK;
}
