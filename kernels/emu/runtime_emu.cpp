// runtime_emu.cpp: the runtime and GEMM parts of libgosd_cuda's C ABI for
// the host emulation (emu.h), so that the emulated kernels link into a
// complete libgosd_cuda.so that the cuda-tagged Go code can load on a
// machine without a GPU (see run.sh). "Device" memory is host memory, one
// emulated device of compute capability 9.0, streams and events do nothing
// (every call completes before it returns), and the GEMMs are plain loops
// with the same input rounding as cuBLASLt's 16-bit paths (x rounded to the
// weight's type, f32 accumulation).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

#include "emu.h"
#include "gosd_cuda.h"

#include "common.cuh" // the kernels' own status and parameter helpers

namespace {

int efail(char *msg, size_t msglen, int code, const char *what) { return gosd::fail(msg, msglen, code, "%s", what); }

constexpr size_t kTotal = size_t(16) << 30; // the emulated device's memory
std::mutex mu;
std::unordered_map<void *, size_t> sizes;
size_t used = 0;

// h2f reads 16-bit bits as the GPU does (emu.h's conversions).
float h2f(uint16_t b, bool bf16) { return gosd::ld_param(&b, bf16 ? SD_CUDA_BF16 : SD_CUDA_F16, 0); }

float round_to(float v, bool bf16) {
    return bf16 ? __bfloat162float(__float2bfloat16_rn(v)) : __half2float(__float2half_rn(v));
}

// gemm: y[M,N] = sum_k xv(m,k) * wv(n,k) (+ bias[n]), accumulated in double
// and rounded once (the GPU accumulates in f32; the difference is far below
// the tests' tolerances).
template <typename X, typename W>
void gemm(float *y, int M, int N, int K, X xv, W wv, const void *bias, int bias_dt) {
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                s += double(xv(m, k)) * double(wv(n, k));
            }
            if (bias != nullptr) {
                s += gosd::ld_param(bias, bias_dt, n);
            }
            y[size_t(m) * N + n] = float(s);
        }
    }
}

int check_linear(sd_cuda_blas *h, const void *x, const void *w, const void *y, int M, int N, int K,
                 char *msg, size_t msglen) {
    if (h == nullptr) {
        return efail(msg, msglen, SD_CUDA_EINVAL, "linear: NULL blas handle");
    }
    if (M < 0 || N <= 0 || K <= 0) {
        return efail(msg, msglen, SD_CUDA_EINVAL, "linear: bad sizes");
    }
    if (M > 0 && (x == nullptr || w == nullptr || y == nullptr)) {
        return efail(msg, msglen, SD_CUDA_EINVAL, "linear: NULL pointer");
    }
    return SD_CUDA_OK;
}

} // namespace

struct sd_cuda_blas {
    int unused;
};

extern "C" {

int sd_cuda_device_count(int *n, char *msg, size_t msglen) {
    if (n == nullptr) {
        return efail(msg, msglen, SD_CUDA_EINVAL, "device_count: n is NULL");
    }
    *n = 1;
    return SD_CUDA_OK;
}

int sd_cuda_set_device(int dev, char *msg, size_t msglen) {
    return dev == 0 ? SD_CUDA_OK : efail(msg, msglen, SD_CUDA_ENODEV, "set_device: no such emulated device");
}

int sd_cuda_device_info(int dev, char *name, size_t namelen, int *major, int *minor, size_t *total_bytes,
                        size_t *free_bytes, char *msg, size_t msglen) {
    if (dev != 0) {
        return efail(msg, msglen, SD_CUDA_ENODEV, "device_info: no such emulated device");
    }
    if (name != nullptr && namelen > 0) {
        snprintf(name, namelen, "host emulation");
    }
    if (major != nullptr) {
        *major = 9;
    }
    if (minor != nullptr) {
        *minor = 0;
    }
    size_t fr = 0, tot = 0;
    sd_cuda_mem_info(&fr, &tot, msg, msglen);
    if (total_bytes != nullptr) {
        *total_bytes = tot;
    }
    if (free_bytes != nullptr) {
        *free_bytes = fr;
    }
    return SD_CUDA_OK;
}

int sd_cuda_runtime_version(int *runtime, int *driver, char *, size_t) {
    if (runtime != nullptr) {
        *runtime = 0;
    }
    if (driver != nullptr) {
        *driver = 0;
    }
    return SD_CUDA_OK;
}

int sd_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, char *msg, size_t msglen) {
    if (free_bytes == nullptr || total_bytes == nullptr) {
        return efail(msg, msglen, SD_CUDA_EINVAL, "mem_info: NULL argument");
    }
    std::lock_guard<std::mutex> l(mu);
    *total_bytes = kTotal;
    *free_bytes = kTotal - std::min(used, kTotal);
    return SD_CUDA_OK;
}

int sd_cuda_malloc(void **ptr, size_t bytes, char *msg, size_t msglen) {
    if (ptr == nullptr) {
        return efail(msg, msglen, SD_CUDA_EINVAL, "malloc: ptr is NULL");
    }
    *ptr = nullptr;
    if (bytes == 0) {
        return SD_CUDA_OK;
    }
    std::lock_guard<std::mutex> l(mu);
    if (used + bytes > kTotal) {
        return efail(msg, msglen, SD_CUDA_ENOMEM, "malloc: emulated device memory exhausted");
    }
    void *p = std::aligned_alloc(256, (bytes + 255) / 256 * 256);
    if (p == nullptr) {
        return efail(msg, msglen, SD_CUDA_ENOMEM, "malloc: out of host memory");
    }
    std::memset(p, 0xcd, bytes); // garbage, as fresh device memory
    sizes[p] = bytes;
    used += bytes;
    *ptr = p;
    return SD_CUDA_OK;
}

int sd_cuda_free(void *ptr, char *msg, size_t msglen) {
    if (ptr == nullptr) {
        return SD_CUDA_OK;
    }
    std::lock_guard<std::mutex> l(mu);
    auto it = sizes.find(ptr);
    if (it == sizes.end()) {
        return efail(msg, msglen, SD_CUDA_ECUDA, "free: not an emulated device allocation");
    }
    used -= it->second;
    sizes.erase(it);
    std::free(ptr);
    return SD_CUDA_OK;
}

static int copy(void *dst, const void *src, size_t bytes, char *msg, size_t msglen) {
    if (bytes == 0) {
        return SD_CUDA_OK;
    }
    if (dst == nullptr || src == nullptr) {
        return efail(msg, msglen, SD_CUDA_EINVAL, "memcpy: NULL pointer");
    }
    std::memmove(dst, src, bytes);
    return SD_CUDA_OK;
}

int sd_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes, sd_cuda_stream, char *msg, size_t msglen) {
    return copy(dst, src, bytes, msg, msglen);
}
int sd_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes, sd_cuda_stream, char *msg, size_t msglen) {
    return copy(dst, src, bytes, msg, msglen);
}
int sd_cuda_memcpy_d2d(void *dst, const void *src, size_t bytes, sd_cuda_stream, char *msg, size_t msglen) {
    return copy(dst, src, bytes, msg, msglen);
}
int sd_cuda_memset(void *dst, int v, size_t bytes, sd_cuda_stream, char *msg, size_t msglen) {
    if (bytes > 0 && dst == nullptr) {
        return efail(msg, msglen, SD_CUDA_EINVAL, "memset: NULL pointer");
    }
    std::memset(dst, v, bytes);
    return SD_CUDA_OK;
}

// Streams and events are tokens: every emulated call completes on return.
static int token;
int sd_cuda_stream_create(sd_cuda_stream *s, char *, size_t) {
    *s = &token;
    return SD_CUDA_OK;
}
int sd_cuda_stream_destroy(sd_cuda_stream, char *, size_t) { return SD_CUDA_OK; }
int sd_cuda_stream_sync(sd_cuda_stream, char *, size_t) { return SD_CUDA_OK; }
int sd_cuda_event_create(void **ev, char *, size_t) {
    *ev = &token;
    return SD_CUDA_OK;
}
int sd_cuda_event_destroy(void *, char *, size_t) { return SD_CUDA_OK; }
int sd_cuda_event_record(void *, sd_cuda_stream, char *, size_t) { return SD_CUDA_OK; }
int sd_cuda_stream_wait_event(sd_cuda_stream, void *ev, char *msg, size_t msglen) {
    return ev != nullptr ? SD_CUDA_OK : efail(msg, msglen, SD_CUDA_EINVAL, "stream_wait_event: NULL event");
}
int sd_cuda_event_elapsed(float *ms, void *, void *, char *, size_t) {
    *ms = 0;
    return SD_CUDA_OK;
}

int sd_cuda_blas_create(sd_cuda_blas **h, size_t, char *msg, size_t msglen) {
    if (h == nullptr) {
        return efail(msg, msglen, SD_CUDA_EINVAL, "blas_create: out is NULL");
    }
    *h = new sd_cuda_blas{};
    return SD_CUDA_OK;
}
int sd_cuda_blas_destroy(sd_cuda_blas *h, char *, size_t) {
    delete h;
    return SD_CUDA_OK;
}

static int linear_half(sd_cuda_blas *h, const float *x, const uint16_t *w, const void *bias, int bias_dt, float *y,
                       uint16_t *xs, int M, int N, int K, bool bf16, char *msg, size_t msglen) {
    int rc = check_linear(h, x, w, y, M, N, K, msg, msglen);
    if (rc != SD_CUDA_OK || M == 0) {
        return rc;
    }
    if (xs == nullptr) {
        return efail(msg, msglen, SD_CUDA_EINVAL, "linear: NULL x scratch");
    }
    gemm(
        y, M, N, K, [&](int m, int k) { return round_to(x[size_t(m) * K + k], bf16); },
        [&](int n, int k) { return h2f(w[size_t(n) * K + k], bf16); }, bias, bias_dt);
    return SD_CUDA_OK;
}

int sd_cuda_linear_f16(sd_cuda_blas *h, const float *x, const uint16_t *w, const void *bias, int bias_dtype, float *y,
                       uint16_t *xscratch, int M, int N, int K, sd_cuda_stream, char *msg, size_t msglen) {
    return linear_half(h, x, w, bias, bias_dtype, y, xscratch, M, N, K, false, msg, msglen);
}
int sd_cuda_linear_bf16(sd_cuda_blas *h, const float *x, const uint16_t *w, const void *bias, int bias_dtype,
                        float *y, uint16_t *xscratch, int M, int N, int K, sd_cuda_stream, char *msg,
                        size_t msglen) {
    return linear_half(h, x, w, bias, bias_dtype, y, xscratch, M, N, K, true, msg, msglen);
}
int sd_cuda_linear_f32(sd_cuda_blas *h, const float *x, const float *w, const void *bias, int bias_dtype, float *y,
                       int M, int N, int K, sd_cuda_stream, char *msg, size_t msglen) {
    int rc = check_linear(h, x, w, y, M, N, K, msg, msglen);
    if (rc != SD_CUDA_OK || M == 0) {
        return rc;
    }
    gemm(
        y, M, N, K, [&](int m, int k) { return x[size_t(m) * K + k]; },
        [&](int n, int k) { return w[size_t(n) * K + k]; }, bias, bias_dtype);
    return SD_CUDA_OK;
}
int sd_cuda_matmul_f32(sd_cuda_blas *h, const float *a, const float *b, float *y, int M, int K, int N,
                       sd_cuda_stream, char *msg, size_t msglen) {
    int rc = check_linear(h, a, b, y, M, N, K, msg, msglen);
    if (rc != SD_CUDA_OK || M == 0) {
        return rc;
    }
    gemm(
        y, M, N, K, [&](int m, int k) { return a[size_t(m) * K + k]; },
        [&](int n, int k) { return b[size_t(k) * N + n]; }, nullptr, 0);
    return SD_CUDA_OK;
}

} // extern "C"
