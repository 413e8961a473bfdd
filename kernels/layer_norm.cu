// layer_norm.cu: layer normalisation over the last dimension (Ba, Kiros and
// Hinton, "Layer Normalization", 2016). x [R, C] f32 -> y like x.
#include "common.cuh"

namespace {

constexpr int kThreads = 128;

// layer_norm_kernel: one block per row; two passes (mean, then mean squared
// deviation) over the row, which stays in L1/L2 for SD widths (C <= 2048).
__global__ void layer_norm_kernel(const float *x, const void *gamma, int gdt, const void *beta, int bdt,
                                  float *y, int C, float eps) {
    __shared__ float scratch[32];
    const float *xr = x + (size_t)blockIdx.x * C;
    float s = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        s += xr[i];
    }
    float mean = gosd::block_sum(s, scratch) / (float)C;
    float v = 0.0f;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        float d = xr[i] - mean;
        v += d * d;
    }
    float inv = rsqrtf(gosd::block_sum(v, scratch) / (float)C + eps);
    float *yr = y + (size_t)blockIdx.x * C;
    for (int i = threadIdx.x; i < C; i += blockDim.x) {
        yr[i] = (xr[i] - mean) * inv * gosd::ld_param(gamma, gdt, i) + gosd::ld_param(beta, bdt, i);
    }
}

} // namespace

extern "C" int sd_cuda_layer_norm_f32(const float *x, const void *gamma, int gamma_dtype, const void *beta,
                                      int beta_dtype, float *y, int R, int C, float eps, sd_cuda_stream s,
                                      char *msg, size_t msglen) {
    if (R < 0 || C <= 0) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "layer_norm: bad sizes R=%d C=%d", R, C);
    }
    if (!gosd::valid_dtype(gamma_dtype) || !gosd::valid_dtype(beta_dtype)) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "layer_norm: bad parameter dtype");
    }
    if (R == 0) {
        return SD_CUDA_OK;
    }
    if (x == nullptr || y == nullptr || gamma == nullptr || beta == nullptr) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "layer_norm: NULL pointer");
    }
    // R is at most 2^31-1, within the x-dimension grid limit.
    layer_norm_kernel<<<R, kThreads, 0, static_cast<cudaStream_t>(s)>>>(x, gamma, gamma_dtype, beta,
                                                                        beta_dtype, y, C, eps);
    return gosd::launched("layer_norm", msg, msglen);
}
