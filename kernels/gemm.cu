// gemm.cu: Linear and MatMul through cuBLASLt.
//
// cuBLASLt is column-major; a row-major [R, C] matrix is the column-major
// [C, R] matrix with leading dimension C. So the row-major products map to:
//   linear: y[M,N] = x[M,K]·wᵀ  <=>  yᶜ (N x M) = op(wᶜ)ᵀ (N x K) · xᶜ (K x M),
//           wᶜ is K x N (ld K, transposed), xᶜ is K x M (ld K), yᶜ ld N;
//   matmul: y[M,N] = a[M,K]·b[K,N]  <=>  yᶜ (N x M) = bᶜ (N x K) · aᶜ (K x M).
// Outputs are f32 with f32 accumulation. Half weights need a half x, so x is
// rounded into a caller scratch buffer first.
#include <cublasLt.h>

#include <cstring>
#include <mutex>
#include <new>
#include <unordered_map>

#include "common.cuh"

namespace {

// LtKey identifies a GEMM problem; LtPlan holds its cuBLASLt descriptors and
// the algorithm the heuristic chose, made once per problem: the heuristic
// costs tens of microseconds, about as much as the small GEMMs themselves,
// and a UNet step calls ~200 GEMMs of a few dozen distinct shapes.
struct LtKey {
    int ab, compute, transa, m, n, k, lda, ldb, ldd;
    bool operator==(const LtKey &o) const { return std::memcmp(this, &o, sizeof *this) == 0; }
};
struct LtKeyHash {
    size_t operator()(const LtKey &k) const {
        const int *v = &k.ab;
        size_t h = 1469598103934665603ull;
        for (int i = 0; i < 9; i++) {
            h = (h ^ (size_t)(unsigned)v[i]) * 1099511628211ull;
        }
        return h;
    }
};
struct LtPlan {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
    cublasLtMatmulAlgo_t algo = {};
};

void destroy_plan(LtPlan &p) {
    if (p.ld) cublasLtMatrixLayoutDestroy(p.ld);
    if (p.lb) cublasLtMatrixLayoutDestroy(p.lb);
    if (p.la) cublasLtMatrixLayoutDestroy(p.la);
    if (p.desc) cublasLtMatmulDescDestroy(p.desc);
    p = LtPlan{};
}

} // namespace

struct sd_cuda_blas {
    cublasLtHandle_t lt;
    void *workspace;
    size_t workspace_bytes;
    std::mutex mu; // guards plans
    std::unordered_map<LtKey, LtPlan, LtKeyHash> plans;
};

namespace {

int blas_fail(cublasStatus_t st, const char *op, const char *what, char *msg, size_t msglen) {
    return gosd::fail(msg, msglen, SD_CUDA_EBLAS, "%s: %s failed with cublasStatus %d", op, what, (int)st);
}

// lt_matmul computes D (m x n, col-major, ld ldd, f32) = op(A)·B with A stored
// col-major (m x k, or k x m when transa), B stored k x n, both of type ab.
// The plan for the problem is made on first use and cached in h.
int lt_matmul(sd_cuda_blas *h, cudaDataType_t ab, cublasComputeType_t compute, const void *A, int lda,
              bool transa, const void *B, int ldb, float *D, int ldd, int m, int n, int k, cudaStream_t st,
              const char *op, char *msg, size_t msglen) {
    const LtKey key{(int)ab, (int)compute, transa ? 1 : 0, m, n, k, lda, ldb, ldd};
    std::lock_guard<std::mutex> lock(h->mu);
    auto it = h->plans.find(key);
    if (it == h->plans.end()) {
        LtPlan p;
        cublasLtMatmulPreference_t pref = nullptr;
        int rc = SD_CUDA_OK;
        cublasStatus_t s;
        cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
        cublasLtMatmulHeuristicResult_t heur = {};
        int found = 0;
#define LT_TRY(call, what)                                                                                   \
    if ((s = (call)) != CUBLAS_STATUS_SUCCESS) {                                                             \
        rc = blas_fail(s, op, what, msg, msglen);                                                            \
        goto made;                                                                                           \
    }
        LT_TRY(cublasLtMatmulDescCreate(&p.desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
        LT_TRY(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "set TRANSA");
        LT_TRY(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "set TRANSB");
        LT_TRY(cublasLtMatrixLayoutCreate(&p.la, ab, transa ? k : m, transa ? m : k, lda), "layout A");
        LT_TRY(cublasLtMatrixLayoutCreate(&p.lb, ab, k, n, ldb), "layout B");
        LT_TRY(cublasLtMatrixLayoutCreate(&p.ld, CUDA_R_32F, m, n, ldd), "layout D");
        LT_TRY(cublasLtMatmulPreferenceCreate(&pref), "preference");
        LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &h->workspace_bytes, sizeof(h->workspace_bytes)),
               "set workspace");
        // The heuristic assumes 256-byte aligned pointers (the preference's
        // default), which holds for every buffer gosd hands it: cudaMalloc
        // blocks and 256-byte aligned offsets into prefetched weight blocks.
        LT_TRY(cublasLtMatmulAlgoGetHeuristic(h->lt, p.desc, p.la, p.lb, p.ld, p.ld, pref, 1, &heur, &found),
               "heuristic");
        if (found == 0) {
            rc = gosd::fail(msg, msglen, SD_CUDA_EBLAS, "%s: cuBLASLt has no algorithm for m=%d n=%d k=%d", op, m,
                            n, k);
            goto made;
        }
        p.algo = heur.algo;
#undef LT_TRY
    made:
        if (pref) cublasLtMatmulPreferenceDestroy(pref);
        if (rc != SD_CUDA_OK) {
            destroy_plan(p);
            return rc;
        }
        it = h->plans.emplace(key, p).first;
    }
    const LtPlan &p = it->second;
    const float alpha = 1.0f, beta = 0.0f;
    cublasStatus_t s = cublasLtMatmul(h->lt, p.desc, &alpha, A, p.la, B, p.lb, &beta, D, p.ld, D, p.ld, &p.algo,
                                      h->workspace, h->workspace_bytes, st);
    return s == CUBLAS_STATUS_SUCCESS ? SD_CUDA_OK : blas_fail(s, op, "cublasLtMatmul", msg, msglen);
}

int check_linear(sd_cuda_blas *h, const void *x, const void *w, const void *bias, int bias_dt, const void *y,
                 int M, int N, int K, const char *op, char *msg, size_t msglen) {
    if (h == nullptr) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: NULL blas handle", op);
    }
    if (M < 0 || N <= 0 || K <= 0) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: bad sizes M=%d N=%d K=%d", op, M, N, K);
    }
    if (bias != nullptr && !gosd::valid_dtype(bias_dt)) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: bad bias dtype %d", op, bias_dt);
    }
    if (M > 0 && (x == nullptr || w == nullptr || y == nullptr)) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: NULL pointer", op);
    }
    return SD_CUDA_OK;
}

int linear_half(sd_cuda_blas *h, const float *x, const uint16_t *w, const void *bias, int bias_dt, float *y,
                uint16_t *xs, int M, int N, int K, bool bf16, sd_cuda_stream s, const char *op, char *msg,
                size_t msglen) {
    int rc = check_linear(h, x, w, bias, bias_dt, y, M, N, K, op, msg, msglen);
    if (rc != SD_CUDA_OK || M == 0) {
        return rc;
    }
    if (xs == nullptr) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "%s: NULL x scratch", op);
    }
    size_t n = (size_t)M * K;
    rc = bf16 ? sd_cuda_cast_f32_bf16(x, xs, n, s, msg, msglen) : sd_cuda_cast_f32_f16(x, xs, n, s, msg, msglen);
    if (rc != SD_CUDA_OK) {
        return rc;
    }
    rc = lt_matmul(h, bf16 ? CUDA_R_16BF : CUDA_R_16F, CUBLAS_COMPUTE_32F, w, K, true, xs, K, y, N, N, M, K,
                   static_cast<cudaStream_t>(s), op, msg, msglen);
    if (rc == SD_CUDA_OK && bias != nullptr) {
        rc = sd_cuda_add_bias_f32(y, bias, bias_dt, M, N, s, msg, msglen);
    }
    return rc;
}

} // namespace

extern "C" int sd_cuda_blas_create(sd_cuda_blas **out, size_t workspace_bytes, char *msg, size_t msglen) {
    if (out == nullptr) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "blas_create: out is NULL");
    }
    *out = nullptr;
    sd_cuda_blas *h = new (std::nothrow) sd_cuda_blas{};
    if (h == nullptr) {
        return gosd::fail(msg, msglen, SD_CUDA_ENOMEM, "blas_create: out of host memory");
    }
    cublasStatus_t st = cublasLtCreate(&h->lt);
    if (st != CUBLAS_STATUS_SUCCESS) {
        delete h;
        return blas_fail(st, "blas_create", "cublasLtCreate", msg, msglen);
    }
    if (workspace_bytes > 0) {
        int rc = sd_cuda_malloc(&h->workspace, workspace_bytes, msg, msglen);
        if (rc != SD_CUDA_OK) {
            cublasLtDestroy(h->lt);
            delete h;
            return rc;
        }
    }
    h->workspace_bytes = workspace_bytes;
    *out = h;
    return SD_CUDA_OK;
}

extern "C" int sd_cuda_blas_destroy(sd_cuda_blas *h, char *msg, size_t msglen) {
    if (h == nullptr) {
        return SD_CUDA_OK;
    }
    for (auto &kv : h->plans) {
        destroy_plan(kv.second);
    }
    int rc = sd_cuda_free(h->workspace, msg, msglen);
    cublasStatus_t st = cublasLtDestroy(h->lt);
    delete h;
    if (rc == SD_CUDA_OK && st != CUBLAS_STATUS_SUCCESS) {
        rc = blas_fail(st, "blas_destroy", "cublasLtDestroy", msg, msglen);
    }
    return rc;
}

extern "C" int sd_cuda_linear_f16(sd_cuda_blas *h, const float *x, const uint16_t *w, const void *bias,
                                  int bias_dtype, float *y, uint16_t *xscratch, int M, int N, int K,
                                  sd_cuda_stream s, char *msg, size_t msglen) {
    return linear_half(h, x, w, bias, bias_dtype, y, xscratch, M, N, K, false, s, "linear_f16", msg, msglen);
}

extern "C" int sd_cuda_linear_bf16(sd_cuda_blas *h, const float *x, const uint16_t *w, const void *bias,
                                   int bias_dtype, float *y, uint16_t *xscratch, int M, int N, int K,
                                   sd_cuda_stream s, char *msg, size_t msglen) {
    return linear_half(h, x, w, bias, bias_dtype, y, xscratch, M, N, K, true, s, "linear_bf16", msg, msglen);
}

extern "C" int sd_cuda_linear_f32(sd_cuda_blas *h, const float *x, const float *w, const void *bias,
                                  int bias_dtype, float *y, int M, int N, int K, sd_cuda_stream s, char *msg,
                                  size_t msglen) {
    int rc = check_linear(h, x, w, bias, bias_dtype, y, M, N, K, "linear_f32", msg, msglen);
    if (rc != SD_CUDA_OK || M == 0) {
        return rc;
    }
    rc = lt_matmul(h, CUDA_R_32F, CUBLAS_COMPUTE_32F, w, K, true, x, K, y, N, N, M, K, static_cast<cudaStream_t>(s),
                   "linear_f32", msg, msglen);
    if (rc == SD_CUDA_OK && bias != nullptr) {
        rc = sd_cuda_add_bias_f32(y, bias, bias_dtype, M, N, s, msg, msglen);
    }
    return rc;
}

extern "C" int sd_cuda_matmul_f32(sd_cuda_blas *h, const float *a, const float *b, float *y, int M, int K, int N,
                                  sd_cuda_stream s, char *msg, size_t msglen) {
    if (h == nullptr) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "matmul_f32: NULL blas handle");
    }
    if (M < 0 || K <= 0 || N <= 0) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "matmul_f32: bad sizes M=%d K=%d N=%d", M, K, N);
    }
    if (M == 0) {
        return SD_CUDA_OK;
    }
    if (a == nullptr || b == nullptr || y == nullptr) {
        return gosd::fail(msg, msglen, SD_CUDA_EINVAL, "matmul_f32: NULL pointer");
    }
    return lt_matmul(h, CUDA_R_32F, CUBLAS_COMPUTE_32F, b, N, false, a, K, y, N, N, M, K,
                     static_cast<cudaStream_t>(s), "matmul_f32", msg, msglen);
}
