// cast.cu: element type conversions between f32, f16 and bf16 (round to
// nearest even), x [n] -> y [n].
#include "common.cuh"

namespace {

template <typename TI, typename TO> __global__ void cast_kernel(const TI *x, TO *y, size_t n) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        y[i] = gosd::from_f32<TO>(gosd::to_f32(x[i]));
    }
}

template <typename TI, typename TO>
int cast(const void *x, void *y, size_t n, sd_cuda_stream s, const char *op, char *msg, size_t msglen) {
    if (n == 0) {
        return SD_CUDA_OK;
    }
    if (x == nullptr || y == nullptr) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: NULL pointer", op);
    }
    cast_kernel<TI, TO><<<gosd::grid_for(n, 256), 256, 0, static_cast<cudaStream_t>(s)>>>(
        static_cast<const TI *>(x), static_cast<TO *>(y), n);
    return gosd::launched(op, msg, msglen);
}

} // namespace

extern "C" int sd_cuda_cast_f32_f16(const float *x, uint16_t *y, size_t n, sd_cuda_stream s, char *msg,
                                    size_t msglen) {
    return cast<float, __half>(x, y, n, s, "cast_f32_f16", msg, msglen);
}

extern "C" int sd_cuda_cast_f16_f32(const uint16_t *x, float *y, size_t n, sd_cuda_stream s, char *msg,
                                    size_t msglen) {
    return cast<__half, float>(x, y, n, s, "cast_f16_f32", msg, msglen);
}

extern "C" int sd_cuda_cast_f32_bf16(const float *x, uint16_t *y, size_t n, sd_cuda_stream s, char *msg,
                                     size_t msglen) {
    return cast<float, __nv_bfloat16>(x, y, n, s, "cast_f32_bf16", msg, msglen);
}

extern "C" int sd_cuda_cast_bf16_f32(const uint16_t *x, float *y, size_t n, sd_cuda_stream s, char *msg,
                                     size_t msglen) {
    return cast<__nv_bfloat16, float>(x, y, n, s, "cast_bf16_f32", msg, msglen);
}

extern "C" int sd_cuda_cast_f16_bf16(const uint16_t *x, uint16_t *y, size_t n, sd_cuda_stream s, char *msg,
                                     size_t msglen) {
    return cast<__half, __nv_bfloat16>(x, y, n, s, "cast_f16_bf16", msg, msglen);
}

extern "C" int sd_cuda_cast_bf16_f16(const uint16_t *x, uint16_t *y, size_t n, sd_cuda_stream s, char *msg,
                                     size_t msglen) {
    return cast<__nv_bfloat16, __half>(x, y, n, s, "cast_bf16_f16", msg, msglen);
}
