/*
 * gosd_cpu.h - C ABI of gosd's native CPU kernels.
 *
 * Layout: every array is dense and row-major (C order); shapes are written
 * outermost first, e.g. x: [B, C, H, W]. Activations are f32. Weights may be
 * f32, f16 or bf16 (given by an sd_dtype); 16-bit weights are converted to f32
 * inside the kernels' packing steps, never copied whole.
 *
 * Errors: every entry point returns an int status (SD_OK = 0) and, on failure,
 * writes a NUL-terminated message of at most msglen bytes into msg. The
 * kernels never abort or exit.
 *
 * Threads: kernels run on an OpenMP team of sd_cpu_threads() threads (all
 * CPUs by default). Kernels may be called concurrently from several threads.
 */
#ifndef GOSD_CPU_H
#define GOSD_CPU_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
enum {
	SD_OK = 0,
	SD_ERR_ARG = 1,   /* bad size or argument */
	SD_ERR_DTYPE = 2, /* unsupported dtype */
	SD_ERR_NOMEM = 3, /* allocation failed */
};

/* Element types; the values match Go's tensor.DType. */
enum { SD_F32 = 0, SD_F16 = 1, SD_BF16 = 2 };

/* Kernel families chosen at run time. */
enum { SD_ISA_PORTABLE = 0, SD_ISA_AVX512 = 1 };

/* Unary ops; the values match Go's tensor.Unary. */
enum { SD_SILU = 0, SD_GELU = 1, SD_QUICK_GELU = 2, SD_RELU = 3, SD_TANH = 4 };

/* sd_cpu_set_threads sets the number of threads kernels use; n <= 0 means all CPUs. */
int sd_cpu_set_threads(int n);
/* sd_cpu_threads returns the number of threads kernels use. */
int sd_cpu_threads(void);
/*
 * sd_cpu_set_isa selects the kernel family: SD_ISA_PORTABLE, SD_ISA_AVX512,
 * or -1 for the default (the best the CPU supports, unless the environment
 * variable GOSD_CPU=portable forces the portable path). Returns SD_ERR_ARG if
 * the CPU lacks the requested family.
 */
int sd_cpu_set_isa(int isa, char *msg, int msglen);
/* sd_cpu_isa returns the kernel family in use. */
int sd_cpu_isa(void);
/* sd_cpu_has_avx512 reports whether the CPU supports the AVX-512 kernels. */
int sd_cpu_has_avx512(void);

/* Precisions of the matrix products (Linear, Conv2D, attention). */
enum { SD_PREC_F32 = 0, SD_PREC_BF16 = 1 };

/*
 * sd_cpu_set_precision selects the precision of the matrix products:
 * SD_PREC_F32 (exact f32 products, the default), SD_PREC_BF16 (activations and
 * weights rounded to bf16 to nearest even, products accumulated in f32, on
 * CPUs with AVX512-BF16; others keep f32), or -1 for the default (environment
 * variable GOSD_PRECISION=bf16|f32, else f32). Process wide.
 */
int sd_cpu_set_precision(int prec, char *msg, int msglen);
/* sd_cpu_precision returns the precision selected (SD_PREC_*). */
int sd_cpu_precision(void);
/* sd_cpu_has_bf16 reports whether the CPU has AVX512-BF16 (VDPBF16PS). */
int sd_cpu_has_bf16(void);
/* sd_cpu_bf16_active reports whether the bf16 kernels run (bf16 selected, CPU able, AVX-512 family). */
int sd_cpu_bf16_active(void);
/* sd_cpu_has_amx reports whether AMX-BF16 is present and the OS granted tile data (never used yet). */
int sd_cpu_has_amx(void);
/*
 * sd_cpu_weight_cache sets the budget (bytes) of the cache of packed bf16
 * weight panels (bf16 precision only; 0 disables it) and returns the bytes in
 * use. limit < 0 only queries. The default budget is GOSD_WEIGHT_CACHE_MB
 * (MiB), else 4096 MiB.
 */
int64_t sd_cpu_weight_cache(int64_t limit);

/* sd_cpu_weight_cache_clear drops every cached packed weight, keeping the
 * budget (for a caller that unmaps a checkpoint). */
void sd_cpu_weight_cache_clear(void);

/*
 * sd_cpu_weight_cache_evict drops the cached packed copies of the weights
 * that start inside one of the n byte ranges [lo[i], hi[i]) and returns the
 * bytes freed: a network's weights, when its phase of a generation ends.
 * Ranges inside a registered file mapping (sd_cpu_file_mapping) also have
 * their resident pages released (they read back from the file).
 */
/*
 * sd_cpu_file_mapping registers (add = 1) or unregisters (add = 0) the
 * read-only, file-backed mapping [lo, hi): packed weights read from it have
 * their pages released without a lookup in /proc/self/maps. Unregister
 * before unmapping. Returns 1 on success.
 */
int sd_cpu_file_mapping(uintptr_t lo, uintptr_t hi, int add);

/*
 * sd_cpu_work_ns returns the thread-nanoseconds the kernels' threads have
 * spent working inside parallel regions since the process started (time
 * waiting at a region's end for the other threads is not counted): with
 * the calls' wall time it says how busy the cores were.
 */
int64_t sd_cpu_work_ns(void);

int64_t sd_cpu_weight_cache_evict(const uintptr_t *lo, const uintptr_t *hi, int64_t n);

/*
 * sd_cpu_probe measures, on the calling thread for about `seconds`, the clock
 * (GHz, from a chain of dependent integer adds, one per cycle) and the f32 FMA
 * throughput (GFLOP/s, independent AVX-512 FMAs; 0 without AVX-512).
 */
int sd_cpu_probe(double seconds, double *ghz, double *gflops, char *msg, int msglen);

/* sd_linear: x [M, K] f32, w [N, K] (wdt), b [N] (bdt) or NULL -> y [M, N]; y = x·wᵀ + b. */
int sd_linear(float *y, const float *x, const void *w, int wdt, const void *b, int bdt,
	      int64_t m, int64_t n, int64_t k, char *msg, int msglen);

/* sd_matmul_f32: a [M, K] f32, b [K, N] f32 -> y [M, N]; y = a·b. */
int sd_matmul_f32(float *y, const float *a, const float *b, int64_t m, int64_t n, int64_t k,
		  char *msg, int msglen);

/*
 * sd_conv2d: x [B, C, H, W] f32, w [O, C, kh, kw] (wdt), bias [O] (bdt) or NULL
 * -> y [B, O, ho, wo]; zero padding pad_top/pad_left (bottom/right padding is
 * implied by ho and wo), stride >= 1.
 */
int sd_conv2d(float *y, const float *x, const void *w, int wdt, const void *bias, int bdt,
	      int64_t batch, int64_t c, int64_t h, int64_t wd, int64_t o, int64_t kh, int64_t kw,
	      int64_t stride, int64_t pad_top, int64_t pad_left, int64_t ho, int64_t wo,
	      char *msg, int msglen);

/*
 * sd_group_norm: x [B, C, S] f32, gamma (gdt) and beta (bdt) [C] -> y [B, C, S];
 * statistics over each of `groups` groups of C/groups channels; optional SiLU.
 * y may equal x.
 */
int sd_group_norm(float *y, const float *x, const void *gamma, int gdt, const void *beta,
		  int bdt, int64_t batch, int64_t c, int64_t s, int64_t groups, float eps,
		  int silu, char *msg, int msglen);

/* sd_layer_norm: x [R, C] f32, gamma (gdt) and beta (bdt) [C] -> y [R, C]. y may equal x. */
int sd_layer_norm(float *y, const float *x, const void *gamma, int gdt, const void *beta,
		  int bdt, int64_t rows, int64_t c, float eps, char *msg, int msglen);

/*
 * sd_attention: q [B, Lq, H*D], k and v [B, Lk, H*D] f32 -> y [B, Lq, H*D];
 * per batch and head softmax(q·kᵀ/sqrt(D))·v, computed flash style over tiles
 * of queries and keys (online softmax; the score matrix is never stored
 * whole). causal requires lq == lk.
 */
int sd_attention(float *y, const float *q, const float *k, const float *v, int64_t batch,
		 int64_t lq, int64_t lk, int64_t heads, int64_t d, int causal, char *msg,
		 int msglen);

/* sd_unary: y[i] = op(x[i]) for n elements. y may equal x. */
int sd_unary(float *y, const float *x, int64_t n, int op, char *msg, int msglen);
/* sd_add: y = a + b (n elements). y may equal a or b. */
int sd_add(float *y, const float *a, const float *b, int64_t n, char *msg, int msglen);
/* sd_mul: y = a * b (n elements). y may equal a or b. */
int sd_mul(float *y, const float *a, const float *b, int64_t n, char *msg, int msglen);
/* sd_scale: y = x*s + t (n elements). y may equal x. */
int sd_scale(float *y, const float *x, float s, float t, int64_t n, char *msg, int msglen);
/* sd_add_channel: x [P, S], c [P] -> y[p, s] = x[p, s] + c[p]. y may equal x. */
int sd_add_channel(float *y, const float *x, const float *c, int64_t p, int64_t s, char *msg,
		   int msglen);
/* sd_geglu: x [R, 2N] -> y [R, N], y = x[:, :N] * GELU(x[:, N:]). */
int sd_geglu(float *y, const float *x, int64_t rows, int64_t n, char *msg, int msglen);
/* sd_transpose: x [B, M, N] -> y [B, N, M]. */
int sd_transpose(float *y, const float *x, int64_t batch, int64_t m, int64_t n, char *msg,
		 int msglen);
/* sd_concat: a [B, Na], b [B, Nb] -> y [B, Na+Nb] (rows concatenated). */
int sd_concat(float *y, const float *a, const float *b, int64_t batch, int64_t na, int64_t nb,
	      char *msg, int msglen);
/* sd_upsample2x: x [P, H, W] -> y [P, OH, OW], nearest neighbour 2x:
 * y[i][j] = x[i/2][j/2] with OH 2H or 2H-1 and OW 2W or 2W-1 (the odd sizes
 * are the 2x map without its last row or column, which is PyTorch's nearest
 * resize to that size). */
int sd_upsample2x(float *y, const float *x, int64_t p, int64_t h, int64_t w, int64_t oh, int64_t ow,
		  char *msg, int msglen);
/* sd_cast_to_f32: n elements of dtype dt -> f32. */
int sd_cast_to_f32(float *y, const void *x, int dt, int64_t n, char *msg, int msglen);
/* sd_cast_from_f32: n f32 elements -> dtype dt, rounding to nearest even. */
int sd_cast_from_f32(void *y, const float *x, int dt, int64_t n, char *msg, int msglen);

#ifdef __cplusplus
}
#endif
#endif /* GOSD_CPU_H */
