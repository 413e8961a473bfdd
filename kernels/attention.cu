// attention.cu: scaled dot-product attention with an online softmax, after
// Dao et al., "FlashAttention" (2022) and Milakov and Gimelshein, "Online
// normalizer calculation for softmax" (2018). The [Lq, Lk] score matrix is
// never materialised: keys are visited in tiles of kBK and each query row
// keeps a running maximum m, a running sum l and an unnormalised output O.
//
// q [B, Lq, H*D], k and v [B, Lk, H*D] -> y [B, Lq, H*D]; head h of a token
// is the D-wide slice starting at h*D.
#include <mma.h>

#include "common.cuh"

namespace {

using namespace nvcuda;

constexpr int kBQ = 64;                // query rows per block (16 per warp)
constexpr int kBK = 64;                // keys per tile
constexpr int kWarps = kBQ / 16;       // 4 warps, 128 threads
constexpr int kMaxD = 160;             // widest head the tensor-core kernel takes
constexpr float kLog2e = 1.4426950408889634f;

// Shared memory plan for padded head width DP (a multiple of 16). Row strides
// are padded by 8 halves / 4 floats to spread banks; wmma needs every
// fragment pointer 32-byte aligned, which these strides keep (16 rows of any
// of them is a multiple of 32 bytes, and column offsets are multiples of 16
// elements).
template <int DP> struct Smem {
    static constexpr int ldq = DP + 8;    // sQ, sK, sV: T [64][DP+8]
    static constexpr int lds = kBK + 4;   // sS: float [64][kBK+4]
    static constexpr int ldp = kBK + 8;   // sP: T [64][kBK+8]
    static constexpr int ldo = DP + 4;    // sO: float [64][DP+4]
    static constexpr size_t align(size_t b) { return (b + 127) / 128 * 128; }
    static constexpr size_t q = 0;
    static constexpr size_t k = q + align(kBQ * ldq * 2);
    static constexpr size_t v = k + align(kBK * ldq * 2);
    static constexpr size_t s = v + align(kBK * ldq * 2);
    static constexpr size_t p = s + align(kBQ * lds * 4);
    static constexpr size_t o = p + align(kBQ * ldp * 2);
    static constexpr size_t bytes = o + align(kBQ * ldo * 4);
};

// flash_kernel: grid (ceil(Lq/64), H, B), 128 threads. Warp w owns query rows
// 16w..16w+15 of the block's tile. Per key tile: S = Q·Kᵀ on tensor cores
// (f32 accumulators, stored to sS); lanes 2r and 2r+1 then update row r's
// softmax state over 32 columns each, write P = exp(S - m) as T into sP and
// rescale the row of sO; finally O += P·V on tensor cores, with sO loaded as
// the accumulator and stored back. Scores are scaled by log2(e)/sqrt(D) so
// exp2f can be used.
template <typename T, int DP>
__global__ void __launch_bounds__(128) flash_kernel(const T *__restrict__ q, const T *__restrict__ k,
                                                    const T *__restrict__ v, T *__restrict__ y, int Lq,
                                                    int Lk, int H, int D, int causal, float scale_log2) {
    using S = Smem<DP>;
    extern __shared__ __align__(128) unsigned char smem[];
    T *sQ = reinterpret_cast<T *>(smem + S::q);
    T *sK = reinterpret_cast<T *>(smem + S::k);
    T *sV = reinterpret_cast<T *>(smem + S::v);
    float *sS = reinterpret_cast<float *>(smem + S::s);
    T *sP = reinterpret_cast<T *>(smem + S::p);
    float *sO = reinterpret_cast<float *>(smem + S::o);

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int q0 = blockIdx.x * kBQ, h = blockIdx.y, b = blockIdx.z;
    const size_t stride = (size_t)H * D;
    const T *qb = q + (size_t)b * Lq * stride + (size_t)h * D;
    const T *kb = k + (size_t)b * Lk * stride + (size_t)h * D;
    const T *vb = v + (size_t)b * Lk * stride + (size_t)h * D;
    const T zero = gosd::from_f32<T>(0.0f);

    for (int i = tid; i < kBQ * DP; i += blockDim.x) {
        int r = i / DP, c = i % DP;
        sQ[r * S::ldq + c] = (q0 + r < Lq && c < D) ? qb[(size_t)(q0 + r) * stride + c] : zero;
    }
    for (int i = tid; i < kBQ * DP; i += blockDim.x) {
        sO[(i / DP) * S::ldo + i % DP] = 0.0f;
    }

    // Softmax state of row r = lane/2 of this warp; both lanes of a pair keep a copy.
    const int row = warp * 16 + (lane >> 1);
    const int col0 = (lane & 1) * (kBK / 2);
    const int qi = q0 + row;
    float m_run = -INFINITY, l_run = 0.0f;

    const int kend = causal ? min(Lk, q0 + kBQ) : Lk;
    for (int k0 = 0; k0 < kend; k0 += kBK) {
        __syncthreads(); // every warp is done with the previous sK, sV
        for (int i = tid; i < kBK * DP; i += blockDim.x) {
            int r = i / DP, c = i % DP;
            bool in = k0 + r < Lk && c < D;
            sK[r * S::ldq + c] = in ? kb[(size_t)(k0 + r) * stride + c] : zero;
            sV[r * S::ldq + c] = in ? vb[(size_t)(k0 + r) * stride + c] : zero;
        }
        __syncthreads();

        // S = Q·Kᵀ for this warp's 16 rows.
        for (int j = 0; j < kBK / 16; j++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            wmma::fill_fragment(acc, 0.0f);
            for (int kk = 0; kk < DP / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
                wmma::load_matrix_sync(fa, sQ + warp * 16 * S::ldq + kk * 16, S::ldq);
                // Kᵀ as a col-major matrix_b: element (d, n) sits at sK[n*ldq + d].
                wmma::load_matrix_sync(fb, sK + j * 16 * S::ldq + kk * 16, S::ldq);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(sS + warp * 16 * S::lds + j * 16, acc, S::lds, wmma::mem_row_major);
        }
        __syncwarp();

        // Online softmax update for row `row`, columns col0..col0+31.
        float *srow = sS + row * S::lds;
        float mx = -INFINITY;
        for (int c = col0; c < col0 + kBK / 2; c++) {
            int kj = k0 + c;
            bool ok = kj < Lk && (!causal || kj <= qi);
            float sc = ok ? srow[c] * scale_log2 : -INFINITY;
            srow[c] = sc;
            mx = fmaxf(mx, sc);
        }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        float m_new = fmaxf(m_run, mx);
        float m_use = m_new == -INFINITY ? 0.0f : m_new; // a fully masked row so far: avoid inf-inf
        float alpha = exp2f(m_run - m_use);
        float sum = 0.0f;
        T *prow = sP + row * S::ldp;
        for (int c = col0; c < col0 + kBK / 2; c++) {
            T pt = gosd::from_f32<T>(exp2f(srow[c] - m_use));
            prow[c] = pt;
            sum += gosd::to_f32(pt); // sum what P·V will actually use
        }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        l_run = l_run * alpha + sum;
        m_run = m_new;
        float *orow = sO + row * S::ldo;
        for (int c = lane & 1; c < DP; c += 2) {
            orow[c] *= alpha;
        }
        __syncwarp();

        // O += P·V for this warp's 16 rows.
        for (int n = 0; n < DP / 16; n++) {
            wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
            float *optr = sO + warp * 16 * S::ldo + n * 16;
            wmma::load_matrix_sync(acc, optr, S::ldo, wmma::mem_row_major);
            for (int kk = 0; kk < kBK / 16; kk++) {
                wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
                wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> fb;
                wmma::load_matrix_sync(fa, sP + warp * 16 * S::ldp + kk * 16, S::ldp);
                wmma::load_matrix_sync(fb, sV + kk * 16 * S::ldq + n * 16, S::ldq);
                wmma::mma_sync(acc, fa, fb, acc);
            }
            wmma::store_matrix_sync(optr, acc, S::ldo, wmma::mem_row_major);
        }
        __syncwarp();
    }

    if (qi < Lq) {
        float inv = l_run > 0.0f ? 1.0f / l_run : 0.0f;
        const float *orow = sO + row * S::ldo;
        T *yr = y + ((size_t)b * Lq + qi) * stride + (size_t)h * D;
        for (int c = lane & 1; c < D; c += 2) {
            yr[c] = gosd::from_f32<T>(orow[c] * inv);
        }
    }
}

template <typename T, int DP>
int launch_flash(const T *q, const T *k, const T *v, T *y, int B, int Lq, int Lk, int H, int D, int causal,
                 cudaStream_t st, const char *op, char *msg, size_t msglen) {
    constexpr size_t bytes = Smem<DP>::bytes;
    auto kern = flash_kernel<T, DP>;
    int rc = gosd::cuda_status(
        cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes), op, msg, msglen);
    if (rc != SD_CUDA_OK) {
        return rc;
    }
    dim3 grid((Lq + kBQ - 1) / kBQ, H, B);
    float scale_log2 = kLog2e / sqrtf((float)D);
    kern<<<grid, kWarps * 32, bytes, st>>>(q, k, v, y, Lq, Lk, H, D, causal, scale_log2);
    return gosd::launched(op, msg, msglen);
}

int check_args(const void *q, const void *k, const void *v, const void *y, int B, int Lq, int Lk, int H,
               int D, int causal, int maxD, const char *op, char *msg, size_t msglen) {
    if (B < 0 || Lq < 0 || Lk <= 0 || H <= 0 || D <= 0 || D > maxD || B > 65535 || H > 65535) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: bad sizes B=%d Lq=%d Lk=%d H=%d D=%d (D <= %d)",
                          op, B, Lq, Lk, H, D, maxD);
    }
    if (causal && Lq != Lk) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: causal needs Lq == Lk (got %d, %d)", op, Lq, Lk);
    }
    if (B > 0 && Lq > 0 && (q == nullptr || k == nullptr || v == nullptr || y == nullptr)) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: NULL pointer", op);
    }
    return SD_CUDA_OK;
}

template <typename T>
int flash(const void *qv, const void *kv, const void *vv, void *yv, int B, int Lq, int Lk, int H, int D,
          int causal, sd_cuda_stream s, const char *op, char *msg, size_t msglen) {
    int rc = check_args(qv, kv, vv, yv, B, Lq, Lk, H, D, causal, kMaxD, op, msg, msglen);
    if (rc != SD_CUDA_OK || B == 0 || Lq == 0) {
        return rc;
    }
    const T *q = static_cast<const T *>(qv), *k = static_cast<const T *>(kv), *v = static_cast<const T *>(vv);
    T *y = static_cast<T *>(yv);
    cudaStream_t st = static_cast<cudaStream_t>(s);
    // Pad D to the next multiple of 16; the SD widths 40, 64, 80, 128 and 160
    // land on 48, 64, 80, 128 and 160.
    switch ((D + 15) / 16) {
    case 1:
    case 2:
        return launch_flash<T, 32>(q, k, v, y, B, Lq, Lk, H, D, causal, st, op, msg, msglen);
    case 3:
        return launch_flash<T, 48>(q, k, v, y, B, Lq, Lk, H, D, causal, st, op, msg, msglen);
    case 4:
        return launch_flash<T, 64>(q, k, v, y, B, Lq, Lk, H, D, causal, st, op, msg, msglen);
    case 5:
        return launch_flash<T, 80>(q, k, v, y, B, Lq, Lk, H, D, causal, st, op, msg, msglen);
    case 6:
    case 7:
    case 8:
        return launch_flash<T, 128>(q, k, v, y, B, Lq, Lk, H, D, causal, st, op, msg, msglen);
    default:
        return launch_flash<T, 160>(q, k, v, y, B, Lq, Lk, H, D, causal, st, op, msg, msglen);
    }
}

// attention_f32_kernel: exact f32 attention on CUDA cores for any D. One warp
// per query row: lane t holds output elements t, t+32, ... in registers
// (up to kF32Regs*32 = 1024 wide) and the warp walks every key with an online
// softmax, one key at a time. Slow but simple; the VAE's single 512-wide head
// at 64x64 latents (4096 tokens) is its main user.
// TODO: a tensor-core kernel for D = 512 (split D across warps).
constexpr int kF32Regs = 32;

__global__ void attention_f32_kernel(const float *__restrict__ q, const float *__restrict__ k,
                                     const float *__restrict__ v, float *__restrict__ y, int Lq, int Lk, int H,
                                     int D, int causal, float scale) {
    const int lane = threadIdx.x & 31;
    const size_t rowid = (size_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    const int h = blockIdx.y, b = blockIdx.z;
    if (rowid >= (size_t)Lq) {
        return;
    }
    const int qi = (int)rowid;
    const size_t stride = (size_t)H * D;
    const float *qr = q + ((size_t)b * Lq + qi) * stride + (size_t)h * D;
    float qreg[kF32Regs], acc[kF32Regs];
#pragma unroll
    for (int r = 0; r < kF32Regs; r++) {
        int c = lane + 32 * r;
        qreg[r] = c < D ? qr[c] * scale : 0.0f;
        acc[r] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    const int kend = causal ? qi + 1 : Lk;
    for (int j = 0; j < kend; j++) {
        const float *kr = k + ((size_t)b * Lk + j) * stride + (size_t)h * D;
        const float *vr = v + ((size_t)b * Lk + j) * stride + (size_t)h * D;
        float s = 0.0f;
#pragma unroll
        for (int r = 0; r < kF32Regs; r++) {
            int c = lane + 32 * r;
            if (c < D) {
                s += qreg[r] * kr[c];
            }
        }
        s = gosd::warp_sum(s);
        float m_new = fmaxf(m, s);
        float alpha = expf(m - m_new), p = expf(s - m_new);
        l = l * alpha + p;
        m = m_new;
#pragma unroll
        for (int r = 0; r < kF32Regs; r++) {
            int c = lane + 32 * r;
            if (c < D) {
                acc[r] = acc[r] * alpha + p * vr[c];
            }
        }
    }
    float *yr = y + ((size_t)b * Lq + qi) * stride + (size_t)h * D;
#pragma unroll
    for (int r = 0; r < kF32Regs; r++) {
        int c = lane + 32 * r;
        if (c < D) {
            yr[c] = acc[r] / l;
        }
    }
}

} // namespace

extern "C" int sd_cuda_attention_max_d(void) { return kMaxD; }

extern "C" int sd_cuda_attention_f16(const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *y,
                                     int B, int Lq, int Lk, int H, int D, int causal, sd_cuda_stream s,
                                     char *msg, size_t msglen) {
    return flash<__half>(q, k, v, y, B, Lq, Lk, H, D, causal, s, "attention_f16", msg, msglen);
}

extern "C" int sd_cuda_attention_bf16(const uint16_t *q, const uint16_t *k, const uint16_t *v, uint16_t *y,
                                      int B, int Lq, int Lk, int H, int D, int causal, sd_cuda_stream s,
                                      char *msg, size_t msglen) {
    return flash<__nv_bfloat16>(q, k, v, y, B, Lq, Lk, H, D, causal, s, "attention_bf16", msg, msglen);
}

extern "C" int sd_cuda_attention_f32(const float *q, const float *k, const float *v, float *y, int B, int Lq,
                                     int Lk, int H, int D, int causal, sd_cuda_stream s, char *msg,
                                     size_t msglen) {
    int rc = check_args(q, k, v, y, B, Lq, Lk, H, D, causal, kF32Regs * 32, "attention_f32", msg, msglen);
    if (rc != SD_CUDA_OK || B == 0 || Lq == 0) {
        return rc;
    }
    const int warps = 4;
    dim3 grid((Lq + warps - 1) / warps, H, B);
    attention_f32_kernel<<<grid, warps * 32, 0, static_cast<cudaStream_t>(s)>>>(q, k, v, y, Lq, Lk, H, D,
                                                                                causal, 1.0f / sqrtf((float)D));
    return gosd::launched("attention_f32", msg, msglen);
}
