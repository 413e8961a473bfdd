/*
 * gosd_cuda.h: the C ABI of gosd's CUDA kernels (libgosd_cuda).
 *
 * Plain C, no CUDA types: streams are opaque pointers (a cudaStream_t),
 * device buffers are plain pointers from sd_cuda_malloc, 16-bit floats are
 * passed as uint16_t bit patterns. Every function returns an int status
 * (SD_CUDA_OK = 0) and, on failure, writes a NUL-terminated message into the
 * caller's buffer msg of msglen bytes (msg may be NULL). Nothing here aborts,
 * exits or prints.
 *
 * Layout: all tensors are dense row-major (C order), shapes written
 * outermost first: images [B, C, H, W] (NCHW), token sequences [B, L, C],
 * convolution weights [O, C, kH, kW], linear weights [N, K] (out, in).
 *
 * Naming: sd_cuda_<op>_<dtype>. The dtype suffix names the type that selects
 * the kernel: the weight (and tensor-core compute) type for conv2d and linear,
 * the q/k/v/y type for attention, the activation type (always f32 today) for
 * norms and element-wise ops. Small per-channel parameters (bias, gamma, beta)
 * carry their own dtype argument (SD_CUDA_F32, SD_CUDA_F16 or SD_CUDA_BF16).
 *
 * All ops are asynchronous on the given stream; a status only reports launch
 * errors. sd_cuda_stream_sync reports errors from earlier kernels.
 */
#ifndef GOSD_CUDA_H
#define GOSD_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
enum {
    SD_CUDA_OK = 0,
    SD_CUDA_EINVAL = 1,  /* bad argument: size, shape, null pointer */
    SD_CUDA_ECUDA = 2,   /* CUDA runtime error (launch, memory, device) */
    SD_CUDA_EBLAS = 3,   /* cuBLASLt error or no algorithm for the shape */
    SD_CUDA_ENOMEM = 4,  /* device allocation failed */
    SD_CUDA_ENODEV = 5   /* no usable CUDA device or driver */
};

/* Element types; the values match gosd's tensor.DType. */
enum { SD_CUDA_F32 = 0, SD_CUDA_F16 = 1, SD_CUDA_BF16 = 2 };

/* Unary ops; the values match gosd's tensor.Unary. */
enum { SD_CUDA_SILU = 0, SD_CUDA_GELU = 1, SD_CUDA_QUICK_GELU = 2, SD_CUDA_RELU = 3, SD_CUDA_TANH = 4 };

typedef void *sd_cuda_stream;          /* a cudaStream_t; NULL is the legacy default stream */
typedef struct sd_cuda_blas sd_cuda_blas; /* cuBLASLt handle plus its workspace */

/* ---- runtime ---------------------------------------------------------- */

/* sd_cuda_device_count: number of CUDA devices (0 with no driver is ENODEV). */
int sd_cuda_device_count(int *n, char *msg, size_t msglen);
/* sd_cuda_set_device: make dev current for the calling OS thread. */
int sd_cuda_set_device(int dev, char *msg, size_t msglen);
/* sd_cuda_device_info: name, compute capability and memory of dev. */
int sd_cuda_device_info(int dev, char *name, size_t namelen, int *major, int *minor,
                        size_t *total_bytes, size_t *free_bytes, char *msg, size_t msglen);
/* sd_cuda_runtime_version: CUDA runtime and driver versions (1000*major + 10*minor). */
int sd_cuda_runtime_version(int *runtime, int *driver, char *msg, size_t msglen);

/* sd_cuda_mem_info: free and total memory of the current device. */
int sd_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, char *msg, size_t msglen);
int sd_cuda_malloc(void **ptr, size_t bytes, char *msg, size_t msglen);
int sd_cuda_free(void *ptr, char *msg, size_t msglen);
/* Host buffers may be pageable; h2d returns once src may be reused, d2h once dst is filled. */
int sd_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes, sd_cuda_stream s, char *msg,
                       size_t msglen);
int sd_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes, sd_cuda_stream s, char *msg,
                       size_t msglen);
int sd_cuda_memcpy_d2d(void *dst, const void *src, size_t bytes, sd_cuda_stream s, char *msg,
                       size_t msglen);
/* sd_cuda_memset: fill bytes with the byte value v. */
int sd_cuda_memset(void *dst, int v, size_t bytes, sd_cuda_stream s, char *msg, size_t msglen);

int sd_cuda_stream_create(sd_cuda_stream *s, char *msg, size_t msglen);
int sd_cuda_stream_destroy(sd_cuda_stream s, char *msg, size_t msglen);
int sd_cuda_stream_sync(sd_cuda_stream s, char *msg, size_t msglen);

/* Events for timing: elapsed milliseconds between two recorded points. */
int sd_cuda_event_create(void **ev, char *msg, size_t msglen);
int sd_cuda_event_destroy(void *ev, char *msg, size_t msglen);
int sd_cuda_event_record(void *ev, sd_cuda_stream s, char *msg, size_t msglen);
int sd_cuda_event_elapsed(float *ms, void *start, void *end, char *msg, size_t msglen);
/* sd_cuda_stream_wait_event: work queued on s after this call starts once the
 * work recorded in ev (on another stream) is done; the host does not wait. */
int sd_cuda_stream_wait_event(sd_cuda_stream s, void *ev, char *msg, size_t msglen);

/* sd_cuda_blas_create: a cuBLASLt handle with a device workspace of workspace_bytes. */
int sd_cuda_blas_create(sd_cuda_blas **h, size_t workspace_bytes, char *msg, size_t msglen);
int sd_cuda_blas_destroy(sd_cuda_blas *h, char *msg, size_t msglen);

/* ---- casts: x [n] -> y [n], round to nearest even ---------------------- */

int sd_cuda_cast_f32_f16(const float *x, uint16_t *y, size_t n, sd_cuda_stream s, char *msg, size_t msglen);
int sd_cuda_cast_f16_f32(const uint16_t *x, float *y, size_t n, sd_cuda_stream s, char *msg, size_t msglen);
int sd_cuda_cast_f32_bf16(const float *x, uint16_t *y, size_t n, sd_cuda_stream s, char *msg, size_t msglen);
int sd_cuda_cast_bf16_f32(const uint16_t *x, float *y, size_t n, sd_cuda_stream s, char *msg, size_t msglen);
int sd_cuda_cast_f16_bf16(const uint16_t *x, uint16_t *y, size_t n, sd_cuda_stream s, char *msg, size_t msglen);
int sd_cuda_cast_bf16_f16(const uint16_t *x, uint16_t *y, size_t n, sd_cuda_stream s, char *msg, size_t msglen);

/* ---- attention ---------------------------------------------------------
 * q [B, Lq, H*D], k and v [B, Lk, H*D] -> y [B, Lq, H*D].
 * y = softmax(q·kᵀ/sqrt(D))·v per batch and head; causal: query i sees keys
 * 0..i (needs Lq == Lk). f16/bf16: flash attention (online softmax, f32
 * accumulation on tensor cores, no score matrix in memory), D <= 160.
 * f32: exact-f32 online-softmax kernel on CUDA cores, any D (for the VAE's
 * single 512-wide head and as a precise reference). */
int sd_cuda_attention_f16(const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *y, int B,
                          int Lq, int Lk, int H, int D, int causal, sd_cuda_stream s, char *msg,
                          size_t msglen);
int sd_cuda_attention_bf16(const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *y, int B,
                           int Lq, int Lk, int H, int D, int causal, sd_cuda_stream s, char *msg,
                           size_t msglen);
int sd_cuda_attention_f32(const float *q, const float *k, const float *v, float *y, int B, int Lq, int Lk,
                          int H, int D, int causal, sd_cuda_stream s, char *msg, size_t msglen);
/* sd_cuda_attention_max_d: the largest head width the f16/bf16 kernels take. */
int sd_cuda_attention_max_d(void);

/* ---- convolution -------------------------------------------------------
 * x [B, C, H, W] f32, w [O, C, kH, kW], bias [O] (bias_dtype) or NULL
 * -> y [B, O, Ho, Wo] f32, Ho = (H+pt+pb-kH)/stride+1, Wo likewise; zero padding.
 * f16/bf16: implicit GEMM on tensor cores (x rounded to the weight type while
 * staging, f32 accumulation). f32: direct convolution in f32 on CUDA cores. */
int sd_cuda_conv2d_f16(const float *x, const uint16_t *w, const void *bias, int bias_dtype, float *y,
                       int B, int C, int H, int W, int O, int kH, int kW, int stride, int pad_top,
                       int pad_left, int pad_bottom, int pad_right, sd_cuda_stream s, char *msg,
                       size_t msglen);
int sd_cuda_conv2d_bf16(const float *x, const uint16_t *w, const void *bias, int bias_dtype, float *y,
                        int B, int C, int H, int W, int O, int kH, int kW, int stride, int pad_top,
                        int pad_left, int pad_bottom, int pad_right, sd_cuda_stream s, char *msg,
                        size_t msglen);
int sd_cuda_conv2d_f32(const float *x, const float *w, const void *bias, int bias_dtype, float *y, int B,
                       int C, int H, int W, int O, int kH, int kW, int stride, int pad_top, int pad_left,
                       int pad_bottom, int pad_right, sd_cuda_stream s, char *msg, size_t msglen);

/* ---- GEMM through cuBLASLt ---------------------------------------------
 * linear: x [M, K] f32, w [N, K], bias [N] (bias_dtype) or NULL -> y [M, N] f32,
 * y = x·wᵀ + bias. For f16/bf16 weights x is first rounded into xscratch
 * (M*K 16-bit elements, caller-allocated) and the GEMM accumulates in f32;
 * f32 weights use an f32 GEMM (xscratch unused, may be NULL). */
int sd_cuda_linear_f16(sd_cuda_blas *h, const float *x, const uint16_t *w, const void *bias, int bias_dtype,
                       float *y, uint16_t *xscratch, int M, int N, int K, sd_cuda_stream s, char *msg,
                       size_t msglen);
int sd_cuda_linear_bf16(sd_cuda_blas *h, const float *x, const uint16_t *w, const void *bias,
                        int bias_dtype, float *y, uint16_t *xscratch, int M, int N, int K,
                        sd_cuda_stream s, char *msg, size_t msglen);
int sd_cuda_linear_f32(sd_cuda_blas *h, const float *x, const float *w, const void *bias, int bias_dtype,
                       float *y, int M, int N, int K, sd_cuda_stream s, char *msg, size_t msglen);
/* matmul: a [M, K] f32, b [K, N] f32 -> y [M, N] f32 (f32 GEMM). */
int sd_cuda_matmul_f32(sd_cuda_blas *h, const float *a, const float *b, float *y, int M, int K, int N,
                       sd_cuda_stream s, char *msg, size_t msglen);

/* ---- normalisation ------------------------------------------------------
 * group_norm: x [B, C, HW] f32, gamma and beta [C] -> y like x (y may be x);
 * biased variance per (batch, group of C/G channels), then SiLU if silu. */
int sd_cuda_group_norm_f32(const float *x, const void *gamma, int gamma_dtype, const void *beta,
                           int beta_dtype, float *y, int B, int C, int HW, int G, float eps, int silu,
                           sd_cuda_stream s, char *msg, size_t msglen);
/* layer_norm: x [R, C] f32, gamma and beta [C] -> y like x (y may be x). */
int sd_cuda_layer_norm_f32(const float *x, const void *gamma, int gamma_dtype, const void *beta,
                           int beta_dtype, float *y, int R, int C, float eps, sd_cuda_stream s,
                           char *msg, size_t msglen);

/* ---- element-wise (f32; y may alias an input unless stated) ------------- */

/* unary: x [n] -> y [n], y = op(x) with op an SD_CUDA_SILU... value. */
int sd_cuda_unary_f32(const float *x, float *y, size_t n, int op, sd_cuda_stream s, char *msg, size_t msglen);
int sd_cuda_add_f32(const float *a, const float *b, float *y, size_t n, sd_cuda_stream s, char *msg,
                    size_t msglen);
int sd_cuda_mul_f32(const float *a, const float *b, float *y, size_t n, sd_cuda_stream s, char *msg,
                    size_t msglen);
/* scale: y = x*sc + t. */
int sd_cuda_scale_f32(const float *x, float *y, size_t n, float sc, float t, sd_cuda_stream s, char *msg,
                      size_t msglen);
/* add_channel: x [BC, HW], c [BC] -> y[i, j] = x[i, j] + c[i]. */
int sd_cuda_add_channel_f32(const float *x, const float *c, float *y, size_t BC, size_t HW,
                            sd_cuda_stream s, char *msg, size_t msglen);
/* add_bias: y [R, N] += bias [N] (bias_dtype), in place. */
int sd_cuda_add_bias_f32(float *y, const void *bias, int bias_dtype, size_t R, size_t N, sd_cuda_stream s,
                         char *msg, size_t msglen);
/* geglu: x [R, 2N] -> y [R, N], y = x[:, :N] * GELU(x[:, N:]); y must not alias x. */
int sd_cuda_geglu_f32(const float *x, float *y, size_t R, size_t N, sd_cuda_stream s, char *msg,
                      size_t msglen);
/* transpose: x [B, M, N] -> y [B, N, M]; y must not alias x. */
int sd_cuda_transpose_f32(const float *x, float *y, int B, int M, int N, sd_cuda_stream s, char *msg,
                          size_t msglen);
/* concat: a [B, na], b [B, nb] -> y [B, na+nb] (dimension 1 of NCHW flattened). */
int sd_cuda_concat_f32(const float *a, const float *b, float *y, size_t B, size_t na, size_t nb,
                       sd_cuda_stream s, char *msg, size_t msglen);
/* upsample2x: x [BC, H, W] -> y [BC, OH, OW], y[i][j] = x[i/2][j/2], nearest neighbour 2x with OH
 * 2H or 2H-1 and OW 2W or 2W-1 (odd sizes drop the last row or column); y must not alias x. */
int sd_cuda_upsample2x_f32(const float *x, float *y, size_t BC, int H, int W, int OH, int OW, sd_cuda_stream s,
                           char *msg,
                           size_t msglen);

#ifdef __cplusplus
}
#endif

#endif /* GOSD_CUDA_H */
