/*
 * bf16.c - the AVX512-BF16 kernel family: a VDPBF16PS micro-kernel over bf16
 * pairs of k, the f32 -> bf16 panel converter (round to nearest even, as
 * VCVTNEPS2BF16 does) and the cache of packed bf16 weight panels.
 *
 * Weights are immutable (memory-mapped checkpoints), so a weight operand is
 * packed once, for the whole matrix, and later calls stream the packed panels
 * instead of converting f16 again. The cache is keyed by the weight's address,
 * dtype and geometry plus a fingerprint of sampled elements (a freed Go slice
 * whose address is reused by a different weight gets repacked), and bounded
 * by a byte budget; past it weights are packed per call as before.
 */
#define _DEFAULT_SOURCE /* madvise */
#include "gemm.h"

#include <immintrin.h>
#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#define SDI_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,f16c,avx512bf16")))

#define B16_DOT(i)                                                                        \
	{                                                                                 \
		int32_t w;                                                                \
		memcpy(&w, a + 2 * (i), 4);                                               \
		__m512bh av = (__m512bh)_mm512_set1_epi32(w);                              \
		c##i##a = _mm512_dpbf16_ps(c##i##a, av, b0);                              \
		c##i##b = _mm512_dpbf16_ps(c##i##b, av, b1);                              \
	}

#if SDI_MR != 12 || SDI_NR != 32
#error "the bf16 micro-kernel is written for a 12x32 register block"
#endif

SDI_BF16 void sdi_ukr_bf16(int64_t k2, const uint16_t *a, const uint16_t *b, float *c, int64_t ldc,
			   int accum)
{
	SDI_ROWS(SDI_ROW_DECL)
	for (int i = 0; i < SDI_MR; i++) {
		_mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
		_mm_prefetch((const char *)(c + i * ldc + 16), _MM_HINT_T0);
	}
	for (int64_t p = 0; p < k2; p++) {
		__m512bh b0 = (__m512bh)_mm512_loadu_si512(b), b1 = (__m512bh)_mm512_loadu_si512(b + 32);
		_mm_prefetch((const char *)(b + 8 * 2 * SDI_NR), _MM_HINT_T0);
		SDI_ROWS(B16_DOT)
		a += 2 * SDI_MR;
		b += 2 * SDI_NR;
	}
	SDI_ROWS(SDI_ROW_STORE)
}

SDI_BF16 void sdi_panel_bf16(const float *src, int64_t sstride, int64_t kc, int r, uint16_t *dst)
{
	for (int64_t q = 0; q < (kc + 1) / 2; q++) {
		const float *r0 = src + 2 * q * sstride, *r1 = r0 + sstride;
		int odd = 2 * q + 1 >= kc;
		for (int i0 = 0; i0 < r; i0 += 16) {
			int w = r - i0 < 16 ? r - i0 : 16;
			__mmask16 m = (__mmask16)((1u << w) - 1);
			__m512 lo = _mm512_maskz_loadu_ps(m, r0 + i0);
			__m512 hi = odd ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(m, r1 + i0);
			__m512i l = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
			__m512i h = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi));
			_mm512_mask_storeu_epi32(dst + (q * r + i0) * 2, m,
						 _mm512_or_si512(l, _mm512_slli_epi32(h, 16)));
		}
	}
}

/*
 * sdi_tpack_bf16 packs f32 rows straight into bf16 pairs: dst word
 * [q*dstride + r] (a word is two bf16) = (src[r*ld + 2q], src[r*ld + 2q+1])
 * for q < (kc+1)/2 and r < width (<= 16), rounded to nearest even; rows r >=
 * nrows and the element past an odd kc are zero. Each row's 32 floats become
 * 16 pair words (VCVTNE2PS2BF16), then a 16x16 transpose of 32-bit words as
 * in gemm.c's tpack.
 */
SDI_BF16 void sdi_tpack_bf16(const float *src, int64_t ld, int64_t nrows, int width, int64_t kc,
			     uint16_t *dst, int64_t dstride)
{
	__mmask16 wm = (__mmask16)((1u << width) - 1);
	int64_t nq = (kc + 1) / 2;
	uint32_t *d32 = (uint32_t *)dst;
	for (int64_t q0 = 0; q0 < nq; q0 += 16) {
		int64_t e0 = 2 * q0, en = kc - e0 < 32 ? kc - e0 : 32; /* elements of this block */
		__mmask16 mlo = (__mmask16)(en >= 16 ? 0xffff : (1u << en) - 1);
		__mmask16 mhi = (__mmask16)(en <= 16 ? 0 : en >= 32 ? 0xffff : (1u << (en - 16)) - 1);
		int64_t qn = nq - q0 < 16 ? nq - q0 : 16;
		__m512 r[16];
		for (int i = 0; i < 16; i++) {
			if (i >= nrows) {
				r[i] = _mm512_setzero_ps();
				continue;
			}
			const float *row = src + i * ld + e0;
			__m512 lo = _mm512_maskz_loadu_ps(mlo, row), hi = _mm512_maskz_loadu_ps(mhi, row + 16);
			r[i] = (__m512)_mm512_cvtne2ps_pbh(hi, lo);
		}
		__m512 col[16];
		sdi_transpose16(r, col);
		for (int64_t q = 0; q < qn; q++)
			_mm512_mask_storeu_ps((float *)(d32 + (q0 + q) * dstride), wm, col[q]);
	}
}

/* ---- weight cache ---- */

typedef struct wentry {
	struct wentry *next;
	const void *p;
	int dt, r;
	int64_t rows, k, ld, kcb;
	uint64_t fp;
	int spread; /* fingerprint of spread elements too (not in a file mapping) */
	uint16_t *data;
	size_t bytes;
} wentry;

static pthread_mutex_t g_wmu = PTHREAD_MUTEX_INITIALIZER;
static wentry *g_wlist;
static int64_t g_wused, g_wbudget = -1;

static int64_t budget_locked(void)
{
	if (g_wbudget < 0) {
		const char *env = getenv("GOSD_WEIGHT_CACHE_MB");
		g_wbudget = env ? (int64_t)atoll(env) << 20 : (int64_t)4096 << 20;
		if (g_wbudget < 0)
			g_wbudget = 0;
	}
	return g_wbudget;
}

/*
 * Packed weights live in their own anonymous mappings, so that dropping
 * them (eviction, clearing) gives the memory back to the system at once;
 * from malloc, freed blocks below its mmap threshold would stay resident.
 */
static void *walloc(size_t bytes)
{
	/*
	 * Plain pages: with MADV_HUGEPAGE (and the kernel's "madvise" defrag
	 * setting) the first write of each 2 MiB page waited for compaction,
	 * and packing the SD 1.5 UNet took 2.4 s instead of 1.1 s; no gain in
	 * the steps was measurable.
	 */
	void *p = mmap(NULL, bytes ? bytes : 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void wfree(void *p, size_t bytes)
{
	if (p)
		munmap(p, bytes ? bytes : 1);
}

static void wfree_locked(wentry **pp)
{
	wentry *e = *pp;
	*pp = e->next;
	g_wused -= (int64_t)e->bytes;
	wfree(e->data, e->bytes);
	free(e);
}

int64_t sd_cpu_weight_cache(int64_t limit)
{
	pthread_mutex_lock(&g_wmu);
	budget_locked();
	if (limit >= 0) {
		g_wbudget = limit;
		while (g_wlist && g_wused > g_wbudget)
			wfree_locked(&g_wlist);
	}
	int64_t used = g_wused;
	pthread_mutex_unlock(&g_wmu);
	return used;
}

void sd_cpu_weight_cache_clear(void)
{
	pthread_mutex_lock(&g_wmu);
	while (g_wlist)
		wfree_locked(&g_wlist);
	pthread_mutex_unlock(&g_wmu);
}

static int registered_file_range(uintptr_t a, uintptr_t b);
static void drop_pages(uintptr_t a, uintptr_t b);

int64_t sd_cpu_weight_cache_evict(const uintptr_t *lo, const uintptr_t *hi, int64_t n)
{
	int64_t freed = 0;
	/* The weights' own pages, where they lie in a registered file mapping. */
	for (int64_t i = 0; i < n; i++)
		if (registered_file_range(lo[i], hi[i]))
			drop_pages(lo[i], hi[i]);
	pthread_mutex_lock(&g_wmu);
	for (wentry **pp = &g_wlist; *pp;) {
		uintptr_t a = (uintptr_t)(*pp)->p;
		int hit = 0;
		for (int64_t i = 0; i < n && !hit; i++)
			hit = a >= lo[i] && a < hi[i];
		if (hit) {
			freed += (int64_t)(*pp)->bytes;
			wfree_locked(pp);
		} else {
			pp = &(*pp)->next;
		}
	}
	pthread_mutex_unlock(&g_wmu);
	return freed;
}

/*
 * Read-only file mappings the caller registered (the checkpoint loader
 * does, for each file it maps, and unregisters before unmapping): their
 * pages may be released after packing without asking /proc/self/maps,
 * which lists every mapping - one per packed weight - and made each pack
 * cost a scan of them all.
 */
#define SDI_FILEMAPS 64
static struct {
	uintptr_t lo, hi;
} g_fmaps[SDI_FILEMAPS];
static int g_nfmaps;
static pthread_mutex_t g_fmu = PTHREAD_MUTEX_INITIALIZER;

int sd_cpu_file_mapping(uintptr_t lo, uintptr_t hi, int add)
{
	int ok = 0;
	pthread_mutex_lock(&g_fmu);
	if (add && g_nfmaps < SDI_FILEMAPS) {
		g_fmaps[g_nfmaps].lo = lo, g_fmaps[g_nfmaps].hi = hi;
		g_nfmaps++;
		ok = 1;
	}
	for (int i = 0; !add && i < g_nfmaps; i++)
		if (g_fmaps[i].lo == lo && g_fmaps[i].hi == hi) {
			g_fmaps[i] = g_fmaps[--g_nfmaps];
			ok = 1;
			break;
		}
	pthread_mutex_unlock(&g_fmu);
	return ok;
}

static int registered_file_range(uintptr_t a, uintptr_t b)
{
	int ok = 0;
	pthread_mutex_lock(&g_fmu);
	for (int i = 0; i < g_nfmaps && !ok; i++)
		ok = a >= g_fmaps[i].lo && b <= g_fmaps[i].hi;
	pthread_mutex_unlock(&g_fmu);
	return ok;
}

/*
 * drop_file_pages releases the resident pages of [p, p+bytes) when they lie
 * in one read-only, file-backed mapping (a memory-mapped checkpoint): once a
 * weight is packed, its f16 pages are not needed and would double the
 * resident memory. Read-only file pages cannot hold changes, so dropping
 * them only means a later read faults them in again from the file. Anything
 * else (anonymous or writable memory) is left alone. Registered mappings
 * are trusted; others are looked up in /proc/self/maps.
 * GOSD_KEEP_WEIGHT_PAGES=1 turns this off. Returns whether the pages were
 * released.
 */
static int drop_file_pages(const void *p, size_t bytes)
{
	const char *env = getenv("GOSD_KEEP_WEIGHT_PAGES");
	if (env && strcmp(env, "1") == 0)
		return 0;
	uintptr_t a = (uintptr_t)p, b = a + bytes;
	int ok = registered_file_range(a, b);
	FILE *f = ok ? NULL : fopen("/proc/self/maps", "r");
	if (!ok && !f)
		return 0;
	char line[512];
	while (f && fgets(line, sizeof line, f)) {
		unsigned long lo, hi, off, inode;
		char perms[8], dev[16];
		if (sscanf(line, "%lx-%lx %7s %lx %15s %lu", &lo, &hi, perms, &off, dev, &inode) != 6)
			continue;
		if (a >= lo && b <= hi) {
			ok = inode != 0 && perms[0] == 'r' && perms[1] == '-';
			break;
		}
	}
	if (f)
		fclose(f);
	if (!ok)
		return 0;
	drop_pages(a, b);
	return 1;
}

/* drop_pages releases the whole pages inside [a, b) of a read-only file mapping. */
static void drop_pages(uintptr_t a, uintptr_t b)
{
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t lo = (a + pg - 1) & ~(pg - 1), hi = b & ~(pg - 1);
	if (hi > lo)
		madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/*
 * fingerprint hashes (FNV-1a) the first and last 32 elements of the n
 * elements of w and, when spread is set, 9 more spread over all of them.
 * Released file pages come back on reading (with the kernel's fault-around,
 * 64 KiB each), so weights in file mappings hash only their two ends: two
 * page faults per call.
 */
static uint64_t fingerprint(const void *w, int dt, int64_t n, int spread)
{
	uint64_t h = 1469598103934665603ull;
	size_t es = dt == SD_F32 ? 4 : 2;
	int64_t idx[73];
	int cnt = 0;
	for (int64_t i = 0; i < 32 && i < n; i++)
		idx[cnt++] = i, idx[cnt++] = n - 1 - i;
	for (int i = 0; spread && i < 9 && n > 0; i++)
		idx[cnt++] = (int64_t)((double)(n - 1) * i / 8.0);
	for (int j = 0; j < cnt; j++) {
		uint32_t v = 0;
		memcpy(&v, (const char *)w + (size_t)idx[j] * es, es);
		for (int b = 0; b < 4; b++) {
			h ^= (v >> (8 * b)) & 0xff;
			h *= 1099511628211ull;
		}
	}
	return h;
}

/*
 * wcache_get returns the cached panels of weight p under the key (dt, r,
 * rows, k, ld, kcb), filling bytes of them with fill(ctx, dst) on a miss
 * (returns 0 on failure); NULL when the budget is spent or the fill failed.
 * nel is the number of weight elements (for the fingerprint and for
 * releasing the weight's file pages after the fill).
 */
static const uint16_t *wcache_get(const void *p, int dt, int r, int64_t rows, int64_t k, int64_t ld,
				  int64_t kcb, int64_t nel, size_t bytes,
				  int (*fill)(void *ctx, uint16_t *dst), void *ctx)
{
	size_t es = dt == SD_F32 ? 4 : 2;
	pthread_mutex_lock(&g_wmu);
	for (wentry **pp = &g_wlist; *pp; pp = &(*pp)->next) {
		wentry *e = *pp;
		if (e->p == p && e->dt == dt && e->r == r && e->rows == rows && e->k == k &&
		    e->ld == ld && e->kcb == kcb) {
			if (e->fp == fingerprint(p, dt, nel, e->spread)) {
				pthread_mutex_unlock(&g_wmu);
				return e->data;
			}
			wfree_locked(pp); /* a different weight at a reused address */
			break;
		}
	}
	if (g_wused + (int64_t)bytes > budget_locked()) {
		pthread_mutex_unlock(&g_wmu);
		return NULL;
	}
	wentry *e = calloc(1, sizeof *e);
	uint16_t *data = walloc(bytes);
	if (!e || !data || !fill(ctx, data)) {
		free(e);
		wfree(data, bytes);
		pthread_mutex_unlock(&g_wmu);
		return NULL;
	}
	int spread = !drop_file_pages(p, (size_t)nel * es);
	*e = (wentry){g_wlist, p, dt, r, rows, k, ld, kcb, fingerprint(p, dt, nel, spread), spread,
		      data, bytes};
	g_wlist = e;
	g_wused += (int64_t)bytes;
	pthread_mutex_unlock(&g_wmu);
	return data;
}

const uint16_t *sdi_wcache_fill(const void *p, int dt, int kind, int64_t rows, int64_t k, int64_t nel,
				size_t bytes, int (*fill)(void *ctx, uint16_t *dst), void *ctx)
{
	return wcache_get(p, dt, kind, rows, k, 0, 0, nel, bytes, fill, ctx);
}

typedef struct {
	const void *p;
	int dt, r;
	int64_t rows, k, ld, kcb, kcbp, panels, nblk;
} gemm_pack;

/* fill_gemm packs a GEMM weight operand into bf16 panels (see sdi_wcache). */
static int fill_gemm(void *ctx, uint16_t *data)
{
	const gemm_pack *P = ctx;
	int64_t rows = P->rows, k = P->k, ld = P->ld, kcb = P->kcb, kcbp = P->kcbp;
	int64_t panels = P->panels, nblk = P->nblk;
	int r = P->r, dt = P->dt;
	const void *p = P->p;
	sdi_tpack_fn tpack = sdi_get_tpack();
	size_t es = dt == SD_F32 ? 4 : 2;
	int nt = sdi_threads();
	int failed = 0;
#pragma omp parallel num_threads(nt) if (panels * nblk > 8)
	{
		int64_t w0 = sdi_work_begin();
#pragma omp for schedule(dynamic, 4) nowait
		for (int64_t t = 0; t < nblk * panels; t++) {
			int64_t bi = t / panels, pi = t % panels;
			int64_t p0 = bi * kcb, kc = k - p0 < kcb ? k - p0 : kcb;
			float *tmp = sdi_scratch(5, sizeof(float) * (size_t)(kcb * r + 16));
			if (!tmp) {
#pragma omp atomic write
				failed = 1;
				continue;
			}
			for (int h = 0; h < r; h += 16) {
				int64_t nrows = rows - pi * r - h;
				nrows = nrows < 0 ? 0 : nrows > 16 ? 16 : nrows;
				int width = r - h < 16 ? r - h : 16;
				const char *src = (const char *)p + ((pi * r + h) * ld + p0) * es;
				tpack(nrows > 0 ? src : p, dt, ld, nrows, width, kc, tmp + h, r);
			}
			uint16_t *d = data + t * kcbp * r;
			sdi_panel_bf16(tmp, r, kc, r, d);
			if (kc < kcbp) /* rows past an even kc of a short last block stay unread, but defined */
				memset(d + ((kc + 1) / 2) * 2 * r, 0,
				       sizeof(uint16_t) * (size_t)((kcbp - ((kc + 1) & ~(int64_t)1)) * r));
		}
		sdi_work_end(w0);
	}
	return !failed;
}

const uint16_t *sdi_wcache(const sdi_gemm *g, int which, int64_t kcb)
{
	gemm_pack P = {which == SDI_W_A ? g->a : g->b, which == SDI_W_A ? g->adt : g->bdt,
		       which == SDI_W_A ? SDI_MR : SDI_NR, which == SDI_W_A ? g->m : g->n, g->k,
		       which == SDI_W_A ? g->lda : g->ldb, kcb, (kcb + 1) & ~(int64_t)1, 0, 0};
	P.panels = (P.rows + P.r - 1) / P.r, P.nblk = (P.k + kcb - 1) / kcb;
	size_t bytes = sizeof(uint16_t) * (size_t)(P.nblk * P.panels * P.kcbp * P.r);
	int64_t nel = (P.rows - 1) * P.ld + P.k;
	return wcache_get(P.p, P.dt, P.r, P.rows, P.k, P.ld, kcb, nel, bytes, fill_gemm, &P);
}
