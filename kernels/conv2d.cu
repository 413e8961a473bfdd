// conv2d.cu: 2-D convolution with zero padding (asymmetric allowed) and any
// stride, in NCHW to match the CPU backend and the model code, so no layout
// transposes sit between ops.
//
// f16/bf16 weights: implicit GEMM on tensor cores (the im2col matrix is
// gathered tile by tile into shared memory, never stored; see Chetlur et al.,
// "cuDNN: Efficient Primitives for Deep Learning", 2014). GEMM view:
//   M = B*Ho*Wo output pixels, N = O output channels, K = C*kH*kW,
//   A[m, k] = x[b, c, oy*s - pt + ky, ox*s - pl + kx] (0 outside),
//   Bm[k, n] = w[n, k] (w is [O, C*kH*kW] row-major), y[b, n, oy, ox] = (A·Bm)[m, n] + bias[n].
// NCHW keeps consecutive m (consecutive ox) adjacent in x and y, so the A
// gather and the y store coalesce along m.
// f32 weights: a direct f32 convolution on CUDA cores (exact, slower).
#include <mma.h>

#include "common.cuh"

namespace {

using namespace nvcuda;

constexpr int kBM = 64, kBN = 64, kBK = 32; // block tile; 4 warps in 2x2, each 32x32
constexpr int kThreads = 128;
constexpr int kLdA = kBK + 8; // sA: CT [BM][BK+8], A row-major
constexpr int kLdB = kBK + 8; // sB: CT [BN][BK+8], Bm col-major (k fastest)
constexpr int kLdC = kBN + 4; // sC: float [BM][BN+4]

struct ConvShape {
    int B, C, H, W, O, kH, kW, stride, pt, pl, Ho, Wo;
};

// implicit_gemm_kernel: grid (ceil(M/64), ceil(O/64)), 128 threads. Each
// thread owns one output pixel column m = tid % 64 of the tile for the A
// gather and the y store, and steps through k. Weights of type TW (f16 or
// bf16) and x (f32) are rounded to CT while staging.
// TODO: double-buffer the tiles with cp.async and use 128x128 tiles; this
// single-stage version keeps the tensor cores waiting on the gather.
template <typename CT, typename TW>
__global__ void __launch_bounds__(kThreads) implicit_gemm_kernel(const float *__restrict__ x,
                                                                 const TW *__restrict__ w, const void *bias,
                                                                 int bias_dt, float *__restrict__ y,
                                                                 ConvShape sh) {
    __shared__ __align__(128) CT sA[kBM * kLdA];
    __shared__ __align__(128) CT sB[kBN * kLdB];
    __shared__ __align__(128) float sC[kBM * kLdC];

    const int tid = threadIdx.x, warp = tid >> 5;
    const int wm = warp >> 1, wn = warp & 1;
    const size_t HoWo = (size_t)sh.Ho * sh.Wo;
    const size_t M = (size_t)sh.B * HoWo;
    const int K = sh.C * sh.kH * sh.kW, khw = sh.kH * sh.kW;
    const size_t m0 = (size_t)blockIdx.x * kBM;
    const int n0 = blockIdx.y * kBN;

    // This thread's output pixel for the gather and the epilogue.
    const int mi = tid % kBM;
    const size_t m = m0 + mi;
    const bool mvalid = m < M;
    int b = 0, oy = 0, ox = 0;
    if (mvalid) {
        b = (int)(m / HoWo);
        size_t r = m % HoWo;
        oy = (int)(r / sh.Wo);
        ox = (int)(r % sh.Wo);
    }
    const int iy0 = oy * sh.stride - sh.pt, ix0 = ox * sh.stride - sh.pl;
    const float *xb = x + (size_t)b * sh.C * sh.H * sh.W;

    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 2; j++) {
            wmma::fill_fragment(acc[i][j], 0.0f);
        }
    }

    for (int k0 = 0; k0 < K; k0 += kBK) {
        // A tile: thread covers (mi, kk) for kk = tid/64, tid/64 + 2, ...
        for (int kk = tid / kBM; kk < kBK; kk += kThreads / kBM) {
            int k = k0 + kk;
            float val = 0.0f;
            if (mvalid && k < K) {
                int c = k / khw, r = k % khw;
                int iy = iy0 + r / sh.kW, ix = ix0 + r % sh.kW;
                if (iy >= 0 && iy < sh.H && ix >= 0 && ix < sh.W) {
                    val = xb[((size_t)c * sh.H + iy) * sh.W + ix];
                }
            }
            sA[mi * kLdA + kk] = gosd::from_f32<CT>(val);
        }
        // B tile: consecutive threads read consecutive k of one weight row.
        for (int i = tid; i < kBN * kBK; i += kThreads) {
            int nn = i / kBK, kk = i % kBK;
            int n = n0 + nn, k = k0 + kk;
            float val = (n < sh.O && k < K) ? gosd::to_f32(w[(size_t)n * K + k]) : 0.0f;
            sB[nn * kLdB + kk] = gosd::from_f32<CT>(val);
        }
        __syncthreads();
        for (int kk = 0; kk < kBK; kk += 16) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, CT, wmma::row_major> fa[2];
            wmma::fragment<wmma::matrix_b, 16, 16, 16, CT, wmma::col_major> fb[2];
            for (int i = 0; i < 2; i++) {
                wmma::load_matrix_sync(fa[i], sA + (wm * 32 + i * 16) * kLdA + kk, kLdA);
                wmma::load_matrix_sync(fb[i], sB + (wn * 32 + i * 16) * kLdB + kk, kLdB);
            }
            for (int i = 0; i < 2; i++) {
                for (int j = 0; j < 2; j++) {
                    wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
                }
            }
        }
        __syncthreads();
    }

    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 2; j++) {
            wmma::store_matrix_sync(sC + (wm * 32 + i * 16) * kLdC + wn * 32 + j * 16, acc[i][j], kLdC,
                                    wmma::mem_row_major);
        }
    }
    __syncthreads();
    if (mvalid) {
        float *yb = y + (size_t)b * sh.O * HoWo + (size_t)oy * sh.Wo + ox;
        for (int nn = tid / kBM; nn < kBN; nn += kThreads / kBM) {
            int n = n0 + nn;
            if (n < sh.O) {
                float v = sC[mi * kLdC + nn];
                if (bias != nullptr) {
                    v += gosd::ld_param(bias, bias_dt, n);
                }
                yb[(size_t)n * HoWo] = v;
            }
        }
    }
}

// direct_kernel: one thread per output element, f32 throughout.
__global__ void direct_kernel(const float *__restrict__ x, const float *__restrict__ w, const void *bias,
                              int bias_dt, float *__restrict__ y, ConvShape sh) {
    const size_t HoWo = (size_t)sh.Ho * sh.Wo;
    const size_t total = (size_t)sh.B * sh.O * HoWo;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total;
         i += (size_t)gridDim.x * blockDim.x) {
        int ox = (int)(i % sh.Wo), oy = (int)((i / sh.Wo) % sh.Ho);
        int o = (int)((i / HoWo) % sh.O), b = (int)(i / (HoWo * sh.O));
        float s = bias != nullptr ? gosd::ld_param(bias, bias_dt, o) : 0.0f;
        const float *wo = w + (size_t)o * sh.C * sh.kH * sh.kW;
        for (int c = 0; c < sh.C; c++) {
            const float *xc = x + ((size_t)b * sh.C + c) * sh.H * sh.W;
            for (int ky = 0; ky < sh.kH; ky++) {
                int iy = oy * sh.stride - sh.pt + ky;
                if (iy < 0 || iy >= sh.H) {
                    continue;
                }
                for (int kx = 0; kx < sh.kW; kx++) {
                    int ix = ox * sh.stride - sh.pl + kx;
                    if (ix >= 0 && ix < sh.W) {
                        s = fmaf(xc[(size_t)iy * sh.W + ix], wo[(c * sh.kH + ky) * sh.kW + kx], s);
                    }
                }
            }
        }
        y[i] = s;
    }
}

int make_shape(ConvShape *sh, const void *x, const void *w, const void *bias, int bias_dt, const void *y,
               int B, int C, int H, int W, int O, int kH, int kW, int stride, int pt, int pl, int pb, int pr,
               const char *op, char *msg, size_t msglen) {
    if (B < 0 || C <= 0 || H <= 0 || W <= 0 || O <= 0 || kH <= 0 || kW <= 0 || stride <= 0 || pt < 0 ||
        pl < 0 || pb < 0 || pr < 0) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL,
                          "%s: bad sizes B=%d C=%d H=%d W=%d O=%d k=%dx%d stride=%d pad=%d,%d,%d,%d", op, B, C, H,
                          W, O, kH, kW, stride, pt, pl, pb, pr);
    }
    int Ho = (H + pt + pb - kH) / stride + 1, Wo = (W + pl + pr - kW) / stride + 1;
    if (H + pt + pb < kH || W + pl + pr < kW) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: kernel %dx%d larger than padded input", op, kH, kW);
    }
    if (bias != nullptr && !gosd::valid_dtype(bias_dt)) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: bad bias dtype %d", op, bias_dt);
    }
    if (B > 0 && (x == nullptr || w == nullptr || y == nullptr)) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: NULL pointer", op);
    }
    *sh = ConvShape{B, C, H, W, O, kH, kW, stride, pt, pl, Ho, Wo};
    return SD_CUDA_OK;
}

template <typename CT>
int conv_tc(const float *x, const uint16_t *w, const void *bias, int bias_dt, float *y, int B, int C, int H,
            int W, int O, int kH, int kW, int stride, int pt, int pl, int pb, int pr, sd_cuda_stream s,
            const char *op, char *msg, size_t msglen) {
    ConvShape sh;
    int rc = make_shape(&sh, x, w, bias, bias_dt, y, B, C, H, W, O, kH, kW, stride, pt, pl, pb, pr, op, msg,
                        msglen);
    if (rc != SD_CUDA_OK || B == 0) {
        return rc;
    }
    size_t M = (size_t)B * sh.Ho * sh.Wo;
    size_t gx = (M + kBM - 1) / kBM, gy = ((size_t)O + kBN - 1) / kBN;
    if (gx > 0x7fffffffu || gy > 65535) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: output too large", op);
    }
    implicit_gemm_kernel<CT, CT><<<dim3((unsigned)gx, (unsigned)gy), kThreads, 0, static_cast<cudaStream_t>(s)>>>(
        x, reinterpret_cast<const CT *>(w), bias, bias_dt, y, sh);
    return gosd::launched(op, msg, msglen);
}

} // namespace

extern "C" int sd_cuda_conv2d_f16(const float *x, const uint16_t *w, const void *bias, int bias_dtype, float *y,
                                  int B, int C, int H, int W, int O, int kH, int kW, int stride, int pad_top,
                                  int pad_left, int pad_bottom, int pad_right, sd_cuda_stream s, char *msg,
                                  size_t msglen) {
    return conv_tc<__half>(x, w, bias, bias_dtype, y, B, C, H, W, O, kH, kW, stride, pad_top, pad_left,
                           pad_bottom, pad_right, s, "conv2d_f16", msg, msglen);
}

extern "C" int sd_cuda_conv2d_bf16(const float *x, const uint16_t *w, const void *bias, int bias_dtype,
                                   float *y, int B, int C, int H, int W, int O, int kH, int kW, int stride,
                                   int pad_top, int pad_left, int pad_bottom, int pad_right, sd_cuda_stream s,
                                   char *msg, size_t msglen) {
    return conv_tc<__nv_bfloat16>(x, w, bias, bias_dtype, y, B, C, H, W, O, kH, kW, stride, pad_top, pad_left,
                                  pad_bottom, pad_right, s, "conv2d_bf16", msg, msglen);
}

extern "C" int sd_cuda_conv2d_f32(const float *x, const float *w, const void *bias, int bias_dtype, float *y,
                                  int B, int C, int H, int W, int O, int kH, int kW, int stride, int pad_top,
                                  int pad_left, int pad_bottom, int pad_right, sd_cuda_stream s, char *msg,
                                  size_t msglen) {
    ConvShape sh;
    int rc = make_shape(&sh, x, w, bias, bias_dtype, y, B, C, H, W, O, kH, kW, stride, pad_top, pad_left,
                        pad_bottom, pad_right, "conv2d_f32", msg, msglen);
    if (rc != SD_CUDA_OK || B == 0) {
        return rc;
    }
    size_t total = (size_t)B * O * sh.Ho * sh.Wo;
    direct_kernel<<<gosd::grid_for(total, 256), 256, 0, static_cast<cudaStream_t>(s)>>>(x, w, bias, bias_dtype,
                                                                                        y, sh);
    return gosd::launched("conv2d_f32", msg, msglen);
}
