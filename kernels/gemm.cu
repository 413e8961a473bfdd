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

#include <new>

#include "common.cuh"

struct sd_cuda_blas {
    cublasLtHandle_t lt;
    void *workspace;
    size_t workspace_bytes;
};

namespace {

int blas_fail(cublasStatus_t st, const char *op, const char *what, char *msg, size_t msglen) {
    return gosd::fail(msg, msglen, SD_CUDA_EBLAS, "%s: %s failed with cublasStatus %d", op, what, (int)st);
}

// lt_matmul computes D (m x n, col-major, ld ldd, f32) = op(A)·B with A stored
// col-major (m x k, or k x m when transa), B stored k x n, both of type ab.
int lt_matmul(sd_cuda_blas *h, cudaDataType_t ab, cublasComputeType_t compute, const void *A, int lda,
              bool transa, const void *B, int ldb, float *D, int ldd, int m, int n, int k, cudaStream_t st,
              const char *op, char *msg, size_t msglen) {
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatrixLayout_t la = nullptr, lb = nullptr, ld = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    int rc = SD_CUDA_OK;
    cublasStatus_t s;
    cublasOperation_t ta = transa ? CUBLAS_OP_T : CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtMatmulHeuristicResult_t heur = {};
    int found = 0;
    const float alpha = 1.0f, beta = 0.0f;

#define LT_TRY(call, what)                                                                                   \
    if ((s = (call)) != CUBLAS_STATUS_SUCCESS) {                                                             \
        rc = blas_fail(s, op, what, msg, msglen);                                                            \
        goto done;                                                                                           \
    }
    LT_TRY(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
    LT_TRY(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta)), "set TRANSA");
    LT_TRY(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb)), "set TRANSB");
    LT_TRY(cublasLtMatrixLayoutCreate(&la, ab, transa ? k : m, transa ? m : k, lda), "layout A");
    LT_TRY(cublasLtMatrixLayoutCreate(&lb, ab, k, n, ldb), "layout B");
    LT_TRY(cublasLtMatrixLayoutCreate(&ld, CUDA_R_32F, m, n, ldd), "layout D");
    LT_TRY(cublasLtMatmulPreferenceCreate(&pref), "preference");
    LT_TRY(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                &h->workspace_bytes, sizeof(h->workspace_bytes)),
           "set workspace");
    // TODO: cache the heuristic per (shape, dtype); it costs tens of microseconds per call.
    LT_TRY(cublasLtMatmulAlgoGetHeuristic(h->lt, desc, la, lb, ld, ld, pref, 1, &heur, &found), "heuristic");
    if (found == 0) {
        rc = gosd::fail(msg, msglen, SD_CUDA_EBLAS, "%s: cuBLASLt has no algorithm for m=%d n=%d k=%d", op, m, n,
                        k);
        goto done;
    }
    LT_TRY(cublasLtMatmul(h->lt, desc, &alpha, A, la, B, lb, &beta, D, ld, D, ld, &heur.algo, h->workspace,
                          h->workspace_bytes, st),
           "cublasLtMatmul");
#undef LT_TRY
done:
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
    if (ld) cublasLtMatrixLayoutDestroy(ld);
    if (lb) cublasLtMatrixLayoutDestroy(lb);
    if (la) cublasLtMatrixLayoutDestroy(la);
    if (desc) cublasLtMatmulDescDestroy(desc);
    return rc;
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
