/*
 * attention.c - multi-head attention in the flash style (Dao et al.,
 * "FlashAttention", 2022): for a tile of T queries the keys are visited in
 * blocks of KB with an online softmax (running max m and sum l per query),
 * so only a KB x T block of scores exists at a time.
 *
 * The work is done transposed so that the GEMM micro-kernel applies twice
 * and every softmax step runs along contiguous memory:
 *   Sᵀ[KB, T] = K_blk[KB, D]·Qᵀ[D, T]      (A = keys, B = scaled queries)
 *   Oᵀ[D, T] += V_blkᵀ[D, KB]·P[KB, T]      (A = values, B = probabilities)
 */
#include "gemm.h"

#include <immintrin.h>

#define SDI_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,avx512bf16")))

#ifndef SDI_AT_T
#define SDI_AT_T 64 /* queries per tile, a multiple of SDI_NR */
#endif
#ifndef SDI_AT_KB
#define SDI_AT_KB 96 /* keys per block, a multiple of SDI_MR */
#endif

typedef struct {
	float *qp, *kp, *s, *vp, *o, *m, *l;
	/* bf16 runs: K, V, Qᵀ and P as bf16 pairs of their depth */
	uint16_t *kp16, *vp16, *q16, *s16;
} at_buf;

/*
 * Online-softmax step for one block (Milakov and Gimelshein, "Online
 * normalizer calculation for softmax", 2018): s holds Sᵀ as NP panels of
 * [KB][NR]; rows >= kb are ignored. On return s holds P = exp(S - m_new),
 * m, l are updated and o (Oᵀ, [dp][T]) is rescaled by exp(m_old - m_new).
 */
#define SDI_SOFTMAX_BODY                                                                     \
	for (int jb = 0; jb < SDI_AT_T / SDI_NR; jb++) {                                        \
		float mnew[SDI_NR], alpha[SDI_NR], sum[SDI_NR];                               \
		float *mp = m + jb * SDI_NR, *lp = l + jb * SDI_NR;                            \
		float *sp = s + (int64_t)jb * SDI_AT_KB * SDI_NR;                              \
		for (int c = 0; c < SDI_NR; c++)                                              \
			mnew[c] = mp[c], sum[c] = 0;                                          \
		for (int64_t j = 0; j < kb; j++) {                                            \
			float *row = sp + j * SDI_NR;                                         \
			if (causal) {                                                         \
				int64_t lim = q0 + jb * SDI_NR - (k0 + j); /* c >= -lim masked */ \
				for (int c = 0; c < SDI_NR; c++)                              \
					row[c] = (c + lim < 0) ? -INFINITY : row[c];          \
			}                                                                     \
			for (int c = 0; c < SDI_NR; c++)                                      \
				mnew[c] = row[c] > mnew[c] ? row[c] : mnew[c];                \
		}                                                                             \
		for (int c = 0; c < SDI_NR; c++) {                                            \
			mnew[c] = mnew[c] == -INFINITY ? 0.0f : mnew[c];                      \
			alpha[c] = mp[c] == -INFINITY ? 0.0f : sdi_expf(mp[c] - mnew[c]);     \
		}                                                                             \
		for (int64_t j = 0; j < kb; j++) {                                            \
			float *row = sp + j * SDI_NR;                                         \
			for (int c = 0; c < SDI_NR; c++) {                                    \
				float e = sdi_expf(row[c] - mnew[c]);                         \
				e = row[c] == -INFINITY ? 0.0f : e;                           \
				row[c] = e;                                                   \
				sum[c] += e;                                                  \
			}                                                                     \
		}                                                                             \
		for (int c = 0; c < SDI_NR; c++)                                              \
			lp[c] = lp[c] * alpha[c] + sum[c], mp[c] = mnew[c];                   \
		for (int64_t d = 0; d < dp; d++) {                                            \
			float *orow = o + d * SDI_AT_T + jb * SDI_NR;                         \
			for (int c = 0; c < SDI_NR; c++)                                      \
				orow[c] *= alpha[c];                                          \
		}                                                                             \
	}

static void softmax_portable(float *s, float *m, float *l, float *o, int64_t kb, int64_t dp,
			     int causal, int64_t q0, int64_t k0)
{
	SDI_SOFTMAX_BODY
}

SDI_AVX512 static void softmax_avx512(float *s, float *m, float *l, float *o, int64_t kb,
				      int64_t dp, int causal, int64_t q0, int64_t k0)
{
	SDI_SOFTMAX_BODY
}

/*
 * exp2_ps: 2^x for 16 lanes (0 where x is -inf): x = n + f with n the nearest
 * integer and |f| <= 1/2, 2^f = e^(f·ln2) by its degree-5 Taylor polynomial
 * (relative error < 2e-6, far below bf16's 2^-9), scaled by 2^n with
 * VSCALEFPS (which also handles underflow).
 */
SDI_AVX512 static inline __m512 exp2_ps(__m512 x)
{
	__mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
	__m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__m512 f = _mm512_sub_ps(x, n);
	__m512 p = _mm512_set1_ps(1.3333558146428443e-3f);              /* ln2^5/120 */
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.6181291076284772e-3f)); /* ln2^4/24 */
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.5504108664821580e-2f)); /* ln2^3/6 */
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.4022650695910071e-1f)); /* ln2^2/2 */
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.9314718055994531e-1f)); /* ln2 */
	p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
	return _mm512_maskz_scalef_ps(live, p, n);
}

/*
 * softmax_b16 is the online-softmax step of bf16 runs, on scores in the
 * base-2 domain (queries were scaled by log2(e)/sqrt(D), so 2^s replaces
 * e^s): same contract as SDI_SOFTMAX_BODY, explicit 16-lane code with
 * exp2_ps instead of sdi_expf, except that P is written to s16 as bf16
 * pairs of keys (the panels [KB/2][NR][2] sdi_panel_bf16 would make of it)
 * and s is left holding the scores.
 */
SDI_BF16 static void softmax_b16(float *s, float *m, float *l, float *o, int64_t kb, int64_t dp,
				 int causal, int64_t q0, int64_t k0, uint16_t *s16)
{
	const __m512 ninf = _mm512_set1_ps(-INFINITY);
	for (int jb = 0; jb < SDI_AT_T / SDI_NR; jb++) {
		float *sp = s + (int64_t)jb * SDI_AT_KB * SDI_NR;
		for (int h = 0; h < SDI_NR / 16; h++) {
			float *mp = m + jb * SDI_NR + 16 * h, *lp = l + jb * SDI_NR + 16 * h;
			__m512 mold = _mm512_loadu_ps(mp), mnew = mold;
			for (int64_t j = 0; j < kb; j++) {
				float *row = sp + j * SDI_NR + 16 * h;
				__m512 v = _mm512_loadu_ps(row);
				if (causal) {
					int64_t t = -(q0 + jb * SDI_NR - (k0 + j)) - 16 * h; /* lanes < t masked */
					t = t < 0 ? 0 : t > 16 ? 16 : t;
					if (t > 0) {
						v = _mm512_mask_mov_ps(v, (__mmask16)((1u << t) - 1), ninf);
						_mm512_storeu_ps(row, v);
					}
				}
				mnew = _mm512_max_ps(mnew, v);
			}
			mnew = _mm512_mask_mov_ps(mnew, _mm512_cmp_ps_mask(mnew, ninf, _CMP_EQ_OQ),
						  _mm512_setzero_ps());
			__m512 alpha = exp2_ps(_mm512_sub_ps(mold, mnew)); /* 0 when mold is -inf */
			__m512 sum = _mm512_setzero_ps();
			/*
			 * P goes straight to bf16 pairs of keys (j, j+1), the B panel
			 * layout of the P·V product, instead of back to f32 and
			 * through a separate conversion pass.
			 */
			uint16_t *dst = s16 + (int64_t)jb * SDI_AT_KB * SDI_NR + 32 * h;
			for (int64_t j = 0; j < kb; j += 2) {
				float *row = sp + j * SDI_NR + 16 * h;
				__m512 e0 = exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(row), mnew));
				__m512 e1 = _mm512_setzero_ps();
				sum = _mm512_add_ps(sum, e0);
				if (j + 1 < kb) {
					e1 = exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(row + SDI_NR), mnew));
					sum = _mm512_add_ps(sum, e1);
				}
				__m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(e0));
				__m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(e1));
				_mm512_storeu_si512(dst + (j / 2) * 2 * SDI_NR,
						    _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
			}
			_mm512_storeu_ps(lp, _mm512_fmadd_ps(_mm512_loadu_ps(lp), alpha, sum));
			_mm512_storeu_ps(mp, mnew);
			for (int64_t d = 0; d < dp; d++) {
				float *orow = o + d * SDI_AT_T + jb * SDI_NR + 16 * h;
				_mm512_storeu_ps(orow, _mm512_mul_ps(_mm512_loadu_ps(orow), alpha));
			}
		}
	}
}

typedef void (*softmax_fn)(float *, float *, float *, float *, int64_t, int64_t, int, int64_t,
			   int64_t);

/* scale_cols: x[r*ld + c] *= f[c] for r < rows, c < n. */
SDI_DUAL(scale_cols, (float *x, int64_t ld, int64_t rows, const float *f, int64_t n), {
	for (int64_t r = 0; r < rows; r++)
		for (int64_t c = 0; c < n; c++)
			x[r * ld + c] *= f[c];
})

typedef struct {
	const float *q, *k, *v;
	float *y;
	int64_t batch, lq, lk, heads, d, dp;
	int causal;
	sdi_ukr_fn ukr;
	softmax_fn softmax;
	sdi_tpack_fn tpack;
	void (*scale_cols)(float *, int64_t, int64_t, const float *, int64_t);
	int bf16; /* the two products in bf16 (VDPBF16PS), softmax in f32 */
} at_job;

/* pack_kv packs keys [0, kend) of head h: K as A panels [D][MR], V as A panels [kend][MR]. */
static void pack_kv(const at_job *J, at_buf *B, int64_t n, int64_t h, int64_t kend)
{
	int64_t d = J->d, hd = J->heads * d;
	int64_t kp = (kend + SDI_MR - 1) / SDI_MR;
	for (int64_t ia = 0; ia < kp; ia++) {
		float *dst = B->kp + ia * d * SDI_MR;
		for (int i = 0; i < SDI_MR; i++) {
			int64_t kj = ia * SDI_MR + i;
			if (kj >= kend) {
				for (int64_t t = 0; t < d; t++)
					dst[t * SDI_MR + i] = 0;
				continue;
			}
			const float *kr = J->k + (n * J->lk + kj) * hd + h * d;
			for (int64_t t = 0; t < d; t++)
				dst[t * SDI_MR + i] = kr[t];
		}
	}
	for (int64_t ip = 0; ip < J->dp / SDI_MR; ip++) {
		float *dst = B->vp + ip * kend * SDI_MR;
		int64_t w = d - ip * SDI_MR < SDI_MR ? d - ip * SDI_MR : SDI_MR;
		for (int64_t j = 0; j < kend; j++) {
			const float *vr = J->v + (n * J->lk + j) * hd + h * d + ip * SDI_MR;
			memcpy(dst + j * SDI_MR, vr, (size_t)w * sizeof(float));
			for (int64_t i = w; i < SDI_MR; i++)
				dst[j * SDI_MR + i] = 0;
		}
	}
}

/* attend_tile computes queries [q0, q0+T) of head h from the packed keys and values [0, kend). */
static void attend_tile(const at_job *J, at_buf *B, int64_t n, int64_t h, int64_t q0, int64_t kall)
{
	int64_t d = J->d, dp = J->dp, hd = J->heads * d;
	int64_t tq = J->lq - q0 < SDI_AT_T ? J->lq - q0 : SDI_AT_T;
	float scale = 1.0f / sqrtf((float)d);
	if (J->bf16)
		scale *= 1.4426950408889634f; /* base-2 scores for softmax_b16 */
	/* Qᵀ as B panels [D][NR], scaled by 1/sqrt(D); columns past the tile are zero. */
	const float *qt = J->q + (n * J->lq + q0) * hd + h * d;
	for (int64_t c0 = 0; c0 < SDI_AT_T; c0 += 16) {
		int64_t rows = tq - c0 < 0 ? 0 : tq - c0 > 16 ? 16 : tq - c0;
		J->tpack(qt + c0 * hd, SD_F32, hd, rows, 16, d,
			 B->qp + (c0 / SDI_NR) * d * SDI_NR + c0 % SDI_NR, SDI_NR);
	}
	float sc[SDI_NR];
	for (int c = 0; c < SDI_NR; c++)
		sc[c] = scale;
	J->scale_cols(B->qp, SDI_NR, d * (SDI_AT_T / SDI_NR), sc, SDI_NR);
	int64_t d2 = (d + 1) & ~(int64_t)1, kall2 = (kall + 1) & ~(int64_t)1;
	if (J->bf16)
		for (int jb = 0; jb < SDI_AT_T / SDI_NR; jb++)
			sdi_panel_bf16(B->qp + (int64_t)jb * d * SDI_NR, SDI_NR, d, SDI_NR,
				       B->q16 + (int64_t)jb * d2 * SDI_NR);
	for (int c = 0; c < SDI_AT_T; c++)
		B->m[c] = -INFINITY, B->l[c] = 0;
	memset(B->o, 0, sizeof(float) * (size_t)(dp * SDI_AT_T));
	int64_t kend = J->lk;
	if (J->causal && q0 + tq < kend)
		kend = q0 + tq;
	for (int64_t k0 = 0; k0 < kend; k0 += SDI_AT_KB) {
		int64_t kb = kend - k0 < SDI_AT_KB ? kend - k0 : SDI_AT_KB;
		int64_t kbp = (kb + SDI_MR - 1) / SDI_MR * SDI_MR;
		if (J->bf16) {
			for (int jb = 0; jb < SDI_AT_T / SDI_NR; jb++)
				for (int64_t ia = 0; ia < kbp / SDI_MR; ia++)
					sdi_ukr_bf16(d2 / 2, B->kp16 + (k0 / SDI_MR + ia) * d2 * SDI_MR,
						     B->q16 + (int64_t)jb * d2 * SDI_NR,
						     B->s + (int64_t)jb * SDI_AT_KB * SDI_NR + ia * SDI_MR * SDI_NR,
						     SDI_NR, 0);
			softmax_b16(B->s, B->m, B->l, B->o, kb, dp, J->causal, q0, k0, B->s16);
			for (int64_t ip = 0; ip < dp / SDI_MR; ip++)
				for (int jb = 0; jb < SDI_AT_T / SDI_NR; jb++)
					sdi_ukr_bf16((kb + 1) / 2, B->vp16 + ip * kall2 * SDI_MR + k0 * SDI_MR,
						     B->s16 + (int64_t)jb * SDI_AT_KB * SDI_NR,
						     B->o + ip * SDI_MR * SDI_AT_T + jb * SDI_NR, SDI_AT_T, 1);
			continue;
		}
		/* Sᵀ = K·Qᵀ into panels [KB][NR]. */
		for (int jb = 0; jb < SDI_AT_T / SDI_NR; jb++)
			for (int64_t ia = 0; ia < kbp / SDI_MR; ia++)
				J->ukr(d, B->kp + (k0 / SDI_MR + ia) * d * SDI_MR,
				       B->qp + (int64_t)jb * d * SDI_NR,
				       B->s + (int64_t)jb * SDI_AT_KB * SDI_NR + ia * SDI_MR * SDI_NR,
				       SDI_NR, 0);
		J->softmax(B->s, B->m, B->l, B->o, kb, dp, J->causal, q0, k0);
		/* Oᵀ += Vᵀ·P. */
		for (int64_t ip = 0; ip < dp / SDI_MR; ip++)
			for (int jb = 0; jb < SDI_AT_T / SDI_NR; jb++)
				J->ukr(kb, B->vp + ip * kall * SDI_MR + k0 * SDI_MR,
				       B->s + (int64_t)jb * SDI_AT_KB * SDI_NR,
				       B->o + ip * SDI_MR * SDI_AT_T + jb * SDI_NR, SDI_AT_T, 1);
	}
	/* y = (Oᵀ)ᵀ / l. */
	float inv[SDI_AT_T];
	for (int c = 0; c < SDI_AT_T; c++)
		inv[c] = B->l[c] > 0 ? 1.0f / B->l[c] : 0.0f;
	J->scale_cols(B->o, SDI_AT_T, d, inv, SDI_AT_T);
	float *yt = J->y + (n * J->lq + q0) * hd + h * d;
	for (int64_t t0 = 0; t0 < d; t0 += 16) {
		int w = d - t0 < 16 ? (int)(d - t0) : 16;
		J->tpack(B->o + t0 * SDI_AT_T, SD_F32, SDI_AT_T, w, w, tq, yt + t0, hd);
	}
}

int sd_attention(float *y, const float *q, const float *k, const float *v, int64_t batch,
		 int64_t lq, int64_t lk, int64_t heads, int64_t d, int causal, char *msg,
		 int msglen)
{
	if (batch < 0 || lq < 0 || lk < 1 || heads < 1 || d < 1)
		return sdi_fail(msg, msglen, SD_ERR_ARG,
				"attention: bad sizes b=%lld lq=%lld lk=%lld heads=%lld d=%lld",
				(long long)batch, (long long)lq, (long long)lk, (long long)heads,
				(long long)d);
	if (causal && lq != lk)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "attention: causal needs lq == lk (%lld, %lld)",
				(long long)lq, (long long)lk);
	if (batch * lq == 0)
		return SD_OK;
	if (!y || !q || !k || !v)
		return sdi_fail(msg, msglen, SD_ERR_ARG, "attention: null pointer");
	int64_t dp = (d + SDI_MR - 1) / SDI_MR * SDI_MR;
	at_job J = {q, k, v, y, batch, lq, lk, heads, d, dp, causal, sdi_get_ukr(),
		    sdi_isa() == SD_ISA_AVX512 ? softmax_avx512 : softmax_portable, sdi_get_tpack(),
		    SDI_PICK(scale_cols), sdi_bf16()};
	/*
	 * A job is a range of query tiles of a group of heads; it packs the
	 * group's keys and values once, then walks its tiles, each for every head
	 * of the group, so a tile of q and y is reused from cache across heads.
	 * Groups are as large as fits in 4 MiB of packed keys and values (all
	 * heads for cross-attention over 77 tokens, one head for long
	 * self-attention); ranges are split to give each thread several jobs.
	 */
	int nt = sdi_threads();
	int64_t kp = (lk + SDI_MR - 1) / SDI_MR * SDI_MR;
	int64_t kvhead = kp * d + dp * lk + 16; /* floats per head */
	int64_t gs = (int64_t)(1 << 20) / kvhead;
	gs = gs < 1 ? 1 : gs > heads ? heads : gs;
	int64_t groups = (heads + gs - 1) / gs;
	int64_t tiles = (lq + SDI_AT_T - 1) / SDI_AT_T, bg = batch * groups;
	int64_t chunks = (4 * (int64_t)nt + bg - 1) / bg;
	if (chunks > tiles)
		chunks = tiles;
	int64_t jobs = bg * chunks;
	if ((double)lq * (double)lk * (double)(d * heads * batch) < 2e5 || jobs < 2)
		nt = 1;
	if (nt > jobs)
		nt = (int)jobs;
	size_t tsize = (size_t)(d * SDI_AT_T + SDI_AT_KB * SDI_AT_T + dp * SDI_AT_T + 2 * SDI_AT_T + 64);
	int64_t d2 = (d + 1) & ~(int64_t)1, lk2 = (lk + 1) & ~(int64_t)1;
	int64_t kvhead16 = kp * d2 + dp * lk2 + 32; /* uint16 per head, bf16 runs */
	size_t tsize16 = (size_t)(d2 * SDI_AT_T + SDI_AT_KB * SDI_AT_T + 64);
	int failed = 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		int64_t w0 = sdi_work_begin();
		float *kv = sdi_scratch(1, sizeof(float) * (size_t)(gs * kvhead));
		float *tb = sdi_scratch(2, sizeof(float) * tsize);
		at_buf B = {0};
		uint16_t *kv16 = NULL, *tb16 = NULL;
		if (J.bf16) {
			kv16 = sdi_scratch(4, sizeof(uint16_t) * (size_t)(gs * kvhead16));
			tb16 = sdi_scratch(5, sizeof(uint16_t) * tsize16);
			if (!kv16 || !tb16)
				kv = NULL;
			else
				B.q16 = tb16, B.s16 = tb16 + d2 * SDI_AT_T;
		}
		if (!kv || !tb) {
#pragma omp atomic write
			failed = 1;
		} else {
			/* Offsets keep the micro-kernels' B panels 64-byte aligned. */
			B.s = tb;
			B.qp = B.s + SDI_AT_KB * SDI_AT_T;
			B.o = B.qp + ((d * SDI_AT_T + 15) & ~(int64_t)15);
			B.m = B.o + dp * SDI_AT_T;
			B.l = B.m + SDI_AT_T;
		}
#pragma omp for schedule(dynamic, 1) nowait
		for (int64_t job = 0; job < jobs; job++) {
			if (!kv || !tb)
				continue;
			int64_t ch = job % chunks, gi = (job / chunks) % groups, n = job / (chunks * groups);
			int64_t t0 = tiles * ch / chunks, t1 = tiles * (ch + 1) / chunks;
			int64_t h0 = gi * gs, h1 = h0 + gs < heads ? h0 + gs : heads;
			int64_t kend = lk;
			if (causal && t1 * SDI_AT_T < kend)
				kend = t1 * SDI_AT_T;
			for (int64_t h = h0; h < h1; h++) {
				B.kp = kv + (h - h0) * kvhead;
				B.vp = B.kp + ((kp * d + 15) & ~(int64_t)15);
				pack_kv(&J, &B, n, h, kend);
				if (J.bf16) {
					uint16_t *k16 = kv16 + (h - h0) * kvhead16, *v16 = k16 + kp * d2;
					int64_t kend2 = (kend + 1) & ~(int64_t)1;
					for (int64_t ia = 0; ia < (kend + SDI_MR - 1) / SDI_MR; ia++)
						sdi_panel_bf16(B.kp + ia * d * SDI_MR, SDI_MR, d, SDI_MR,
							       k16 + ia * d2 * SDI_MR);
					for (int64_t ip = 0; ip < dp / SDI_MR; ip++)
						sdi_panel_bf16(B.vp + ip * kend * SDI_MR, SDI_MR, kend, SDI_MR,
							       v16 + ip * kend2 * SDI_MR);
				}
			}
			for (int64_t t = t0; t < t1; t++) {
				/*
				 * The tile's rows of q and y are one contiguous block
				 * for all heads: stream it in, in order, instead of
				 * leaving each head's strided reads to miss.
				 */
				int64_t q0 = t * SDI_AT_T, tq = lq - q0 < SDI_AT_T ? lq - q0 : SDI_AT_T;
				int64_t off = (n * lq + q0) * d * heads, len = tq * d * heads;
				for (int64_t i = 0; i < len; i += 16) {
					__builtin_prefetch(q + off + i, 0, 2);
					__builtin_prefetch(y + off + i, 1, 2);
				}
				for (int64_t h = h0; h < h1; h++) {
					B.kp = kv + (h - h0) * kvhead;
					B.vp = B.kp + ((kp * d + 15) & ~(int64_t)15);
					if (J.bf16)
						B.kp16 = kv16 + (h - h0) * kvhead16, B.vp16 = B.kp16 + kp * d2;
					attend_tile(&J, &B, n, h, t * SDI_AT_T, kend);
				}
			}
		}
		sdi_work_end(w0);
	}
	if (failed)
		return sdi_fail(msg, msglen, SD_ERR_NOMEM, "attention: out of memory");
	return SD_OK;
}
