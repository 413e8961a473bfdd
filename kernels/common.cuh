// common.cuh: helpers shared by the kernel files: status and message
// reporting, dtype conversion, parameter loads and block reductions.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdarg.h>
#include <stdio.h>

#include "gosd_cuda.h"

namespace gosd {

// fail writes a formatted message into msg (when there is room) and returns code.
static inline int fail(char *msg, size_t msglen, int code, const char *fmt, ...) {
    if (msg != nullptr && msglen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, msglen, fmt, ap);
        va_end(ap);
    }
    return code;
}

// cuda_status maps a CUDA runtime error to a status, naming the op.
static inline int cuda_status(cudaError_t e, const char *op, char *msg, size_t msglen) {
    if (e == cudaSuccess) {
        return SD_CUDA_OK;
    }
    int code = SD_CUDA_ECUDA;
    if (e == cudaErrorMemoryAllocation) {
        code = SD_CUDA_ENOMEM;
    } else if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
        code = SD_CUDA_ENODEV;
    }
    return fail(msg, msglen, code, "%s: %s (%s)", op, cudaGetErrorString(e), cudaGetErrorName(e));
}

// launched checks for a launch error right after a kernel launch.
static inline int launched(const char *op, char *msg, size_t msglen) {
    return cuda_status(cudaGetLastError(), op, msg, msglen);
}

static inline bool valid_dtype(int dt) { return dt == SD_CUDA_F32 || dt == SD_CUDA_F16 || dt == SD_CUDA_BF16; }

// grid_for returns a 1-D grid for n elements with grid-stride loops.
static inline unsigned grid_for(size_t n, int threads) {
    size_t g = (n + threads - 1) / threads;
    if (g > 65535u * 16u) {
        g = 65535u * 16u;
    }
    return g == 0 ? 1u : (unsigned)g;
}

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ __forceinline__ T from_f32(float v);
template <> __device__ __forceinline__ float from_f32<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f32<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

// ld_param loads element i of a small parameter vector of runtime dtype dt.
__device__ __forceinline__ float ld_param(const void *p, int dt, size_t i) {
    switch (dt) {
    case SD_CUDA_F16:
        return __half2float(static_cast<const __half *>(p)[i]);
    case SD_CUDA_BF16:
        return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
    default:
        return static_cast<const float *>(p)[i];
    }
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    return v;
}

// block_sum returns the sum of v over the block to every thread. scratch
// holds 32 floats; blockDim.x must be a multiple of 32.
__device__ __forceinline__ float block_sum(float v, float *scratch) {
    int lane = threadIdx.x & 31, wid = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); // scratch may still be read from a previous call
    if (lane == 0) {
        scratch[wid] = v;
    }
    __syncthreads();
    float t = lane < nw ? scratch[lane] : 0.0f;
    return warp_sum(t);
}

} // namespace gosd
