// elementwise.cu: f32 element-wise ops (activations, add, mul, scale,
// per-channel add, bias add, GEGLU) and data movement (transpose, concat,
// nearest 2x upsampling). Index math is in size_t: SD tensors pass 2^31
// elements at high resolutions.
#include "common.cuh"

namespace {

#define GRID_STRIDE(i, n)                                                                          \
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n);                       \
         i += (size_t)gridDim.x * blockDim.x)

__device__ __forceinline__ float gelu(float x) { return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f)); }

__device__ __forceinline__ float apply(int op, float x) {
    switch (op) {
    case SD_CUDA_SILU:
        return x / (1.0f + expf(-x));
    case SD_CUDA_GELU:
        return gelu(x);
    case SD_CUDA_QUICK_GELU:
        return x / (1.0f + expf(-1.702f * x));
    case SD_CUDA_RELU:
        return x > 0.0f ? x : 0.0f;
    default:
        return tanhf(x);
    }
}

__global__ void unary_kernel(const float *x, float *y, size_t n, int op) {
    GRID_STRIDE(i, n) { y[i] = apply(op, x[i]); }
}

__global__ void add_kernel(const float *a, const float *b, float *y, size_t n) {
    GRID_STRIDE(i, n) { y[i] = a[i] + b[i]; }
}

__global__ void mul_kernel(const float *a, const float *b, float *y, size_t n) {
    GRID_STRIDE(i, n) { y[i] = a[i] * b[i]; }
}

__global__ void scale_kernel(const float *x, float *y, size_t n, float sc, float t) {
    GRID_STRIDE(i, n) { y[i] = fmaf(x[i], sc, t); }
}

__global__ void add_channel_kernel(const float *x, const float *c, float *y, size_t n, size_t hw) {
    GRID_STRIDE(i, n) { y[i] = x[i] + c[i / hw]; }
}

__global__ void add_bias_kernel(float *y, const void *bias, int dt, size_t n, size_t cols) {
    GRID_STRIDE(i, n) { y[i] += gosd::ld_param(bias, dt, i % cols); }
}

__global__ void geglu_kernel(const float *x, float *y, size_t n, size_t cols) {
    GRID_STRIDE(i, n) {
        size_t r = i / cols, j = i % cols;
        const float *row = x + r * 2 * cols;
        y[i] = row[j] * gelu(row[cols + j]);
    }
}

// transpose_kernel: 32x32 tiles through shared memory; block (32, 8),
// grid (ceil(N/32), ceil(M/32), B).
__global__ void transpose_kernel(const float *x, float *y, int M, int N) {
    __shared__ float tile[32][33];
    size_t base = (size_t)blockIdx.z * M * N;
    int c0 = blockIdx.x * 32, r0 = blockIdx.y * 32;
    for (int r = threadIdx.y; r < 32; r += 8) {
        int i = r0 + r, j = c0 + threadIdx.x;
        if (i < M && j < N) {
            tile[r][threadIdx.x] = x[base + (size_t)i * N + j];
        }
    }
    __syncthreads();
    for (int r = threadIdx.y; r < 32; r += 8) {
        int j = c0 + r, i = r0 + threadIdx.x; // y[j][i] = x[i][j]
        if (i < M && j < N) {
            y[base + (size_t)j * M + i] = tile[threadIdx.x][r];
        }
    }
}

__global__ void concat_kernel(const float *a, const float *b, float *y, size_t n, size_t na, size_t nb) {
    size_t row = na + nb;
    GRID_STRIDE(i, n) {
        size_t r = i / row, j = i % row;
        y[i] = j < na ? a[r * na + j] : b[r * nb + (j - na)];
    }
}

__global__ void upsample2x_kernel(const float *x, float *y, size_t n, int H, int W, int OH, int OW) {
    GRID_STRIDE(i, n) {
        size_t ox = i % OW, oy = (i / OW) % OH, p = i / ((size_t)OW * OH);
        y[i] = x[(p * H + oy / 2) * W + ox / 2];
    }
}

cudaStream_t st(sd_cuda_stream s) { return static_cast<cudaStream_t>(s); }

int null_check(const char *op, char *msg, size_t msglen, const void *a, const void *b, const void *c) {
    if (a == nullptr || b == nullptr || c == nullptr) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: NULL pointer", op);
    }
    return SD_CUDA_OK;
}

} // namespace

using gosd::grid_for;
using gosd::launched;

extern "C" int sd_cuda_unary_f32(const float *x, float *y, size_t n, int op, sd_cuda_stream s, char *msg,
                                 size_t msglen) {
    if (op < SD_CUDA_SILU || op > SD_CUDA_TANH) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "unary: unknown op %d", op);
    }
    if (n == 0) {
        return SD_CUDA_OK;
    }
    if (int rc = null_check("unary", msg, msglen, x, y, y)) {
        return rc;
    }
    unary_kernel<<<grid_for(n, 256), 256, 0, st(s)>>>(x, y, n, op);
    return launched("unary", msg, msglen);
}

extern "C" int sd_cuda_add_f32(const float *a, const float *b, float *y, size_t n, sd_cuda_stream s, char *msg,
                               size_t msglen) {
    if (n == 0) {
        return SD_CUDA_OK;
    }
    if (int rc = null_check("add", msg, msglen, a, b, y)) {
        return rc;
    }
    add_kernel<<<grid_for(n, 256), 256, 0, st(s)>>>(a, b, y, n);
    return launched("add", msg, msglen);
}

extern "C" int sd_cuda_mul_f32(const float *a, const float *b, float *y, size_t n, sd_cuda_stream s, char *msg,
                               size_t msglen) {
    if (n == 0) {
        return SD_CUDA_OK;
    }
    if (int rc = null_check("mul", msg, msglen, a, b, y)) {
        return rc;
    }
    mul_kernel<<<grid_for(n, 256), 256, 0, st(s)>>>(a, b, y, n);
    return launched("mul", msg, msglen);
}

extern "C" int sd_cuda_scale_f32(const float *x, float *y, size_t n, float sc, float t, sd_cuda_stream s,
                                 char *msg, size_t msglen) {
    if (n == 0) {
        return SD_CUDA_OK;
    }
    if (int rc = null_check("scale", msg, msglen, x, y, y)) {
        return rc;
    }
    scale_kernel<<<grid_for(n, 256), 256, 0, st(s)>>>(x, y, n, sc, t);
    return launched("scale", msg, msglen);
}

extern "C" int sd_cuda_add_channel_f32(const float *x, const float *c, float *y, size_t BC, size_t HW,
                                       sd_cuda_stream s, char *msg, size_t msglen) {
    size_t n = BC * HW;
    if (n == 0) {
        return SD_CUDA_OK;
    }
    if (int rc = null_check("add_channel", msg, msglen, x, c, y)) {
        return rc;
    }
    add_channel_kernel<<<grid_for(n, 256), 256, 0, st(s)>>>(x, c, y, n, HW);
    return launched("add_channel", msg, msglen);
}

extern "C" int sd_cuda_add_bias_f32(float *y, const void *bias, int bias_dtype, size_t R, size_t N,
                                    sd_cuda_stream s, char *msg, size_t msglen) {
    if (!gosd::valid_dtype(bias_dtype)) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "add_bias: bad bias dtype %d", bias_dtype);
    }
    size_t n = R * N;
    if (n == 0) {
        return SD_CUDA_OK;
    }
    if (int rc = null_check("add_bias", msg, msglen, y, bias, y)) {
        return rc;
    }
    add_bias_kernel<<<grid_for(n, 256), 256, 0, st(s)>>>(y, bias, bias_dtype, n, N);
    return launched("add_bias", msg, msglen);
}

extern "C" int sd_cuda_geglu_f32(const float *x, float *y, size_t R, size_t N, sd_cuda_stream s, char *msg,
                                 size_t msglen) {
    size_t n = R * N;
    if (n == 0) {
        return SD_CUDA_OK;
    }
    if (int rc = null_check("geglu", msg, msglen, x, y, y)) {
        return rc;
    }
    geglu_kernel<<<grid_for(n, 256), 256, 0, st(s)>>>(x, y, n, N);
    return launched("geglu", msg, msglen);
}

extern "C" int sd_cuda_transpose_f32(const float *x, float *y, int B, int M, int N, sd_cuda_stream s,
                                     char *msg, size_t msglen) {
    if (B < 0 || M < 0 || N < 0 || B > 65535) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "transpose: bad sizes B=%d M=%d N=%d", B, M, N);
    }
    if ((size_t)B * M * N == 0) {
        return SD_CUDA_OK;
    }
    if (int rc = null_check("transpose", msg, msglen, x, y, y)) {
        return rc;
    }
    dim3 grid((N + 31) / 32, (M + 31) / 32, B);
    if (grid.y > 65535) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "transpose: M=%d too large", M);
    }
    transpose_kernel<<<grid, dim3(32, 8), 0, st(s)>>>(x, y, M, N);
    return launched("transpose", msg, msglen);
}

extern "C" int sd_cuda_concat_f32(const float *a, const float *b, float *y, size_t B, size_t na, size_t nb,
                                  sd_cuda_stream s, char *msg, size_t msglen) {
    size_t n = B * (na + nb);
    if (n == 0) {
        return SD_CUDA_OK;
    }
    if ((na > 0 && a == nullptr) || (nb > 0 && b == nullptr) || y == nullptr) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "concat: NULL pointer");
    }
    concat_kernel<<<grid_for(n, 256), 256, 0, st(s)>>>(a, b, y, n, na, nb);
    return launched("concat", msg, msglen);
}

extern "C" int sd_cuda_upsample2x_f32(const float *x, float *y, size_t BC, int H, int W, int OH, int OW,
                                      sd_cuda_stream s, char *msg, size_t msglen) {
    if (H < 0 || W < 0 || (OH != 2 * H && (OH != 2 * H - 1 || H == 0)) ||
        (OW != 2 * W && (OW != 2 * W - 1 || W == 0))) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "upsample2x: bad sizes %dx%d -> %dx%d", H, W, OH, OW);
    }
    size_t n = BC * (size_t)OH * OW;
    if (n == 0) {
        return SD_CUDA_OK;
    }
    if (int rc = null_check("upsample2x", msg, msglen, x, y, y)) {
        return rc;
    }
    upsample2x_kernel<<<grid_for(n, 256), 256, 0, st(s)>>>(x, y, n, H, W, OH, OW);
    return launched("upsample2x", msg, msglen);
}
