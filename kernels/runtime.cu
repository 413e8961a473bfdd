// runtime.cu: devices, memory, streams and events behind the C ABI, so the
// Go side links only against libgosd_cuda and never against cudart itself.
#include <string.h>

#include "common.cuh"

using gosd::cuda_status;
using gosd::fail;

extern "C" int sd_cuda_device_count(int *n, char *msg, size_t msglen) {
    if (n == nullptr) {
        return fail(msg, msglen, SD_CUDA_EINVAL, "device_count: n is NULL");
    }
    *n = 0;
    cudaError_t e = cudaGetDeviceCount(n);
    if (e != cudaSuccess) {
        cudaGetLastError(); // reset the last-error state so later calls start clean
        *n = 0;
        if (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) {
            return fail(msg, msglen, SD_CUDA_ENODEV, "device_count: %s", cudaGetErrorString(e));
        }
        return cuda_status(e, "device_count", msg, msglen);
    }
    if (*n == 0) {
        return fail(msg, msglen, SD_CUDA_ENODEV, "device_count: no CUDA device");
    }
    return SD_CUDA_OK;
}

extern "C" int sd_cuda_set_device(int dev, char *msg, size_t msglen) {
    return cuda_status(cudaSetDevice(dev), "set_device", msg, msglen);
}

extern "C" int sd_cuda_device_info(int dev, char *name, size_t namelen, int *major, int *minor,
                                   size_t *total_bytes, size_t *free_bytes, char *msg, size_t msglen) {
    cudaDeviceProp p;
    int rc = cuda_status(cudaGetDeviceProperties(&p, dev), "device_info", msg, msglen);
    if (rc != SD_CUDA_OK) {
        return rc;
    }
    if (name != nullptr && namelen > 0) {
        snprintf(name, namelen, "%s", p.name);
    }
    if (major != nullptr) {
        *major = p.major;
    }
    if (minor != nullptr) {
        *minor = p.minor;
    }
    size_t fr = 0, tot = p.totalGlobalMem;
    if (free_bytes != nullptr) {
        int cur = 0;
        cudaGetDevice(&cur);
        if ((rc = cuda_status(cudaSetDevice(dev), "device_info", msg, msglen)) != SD_CUDA_OK) {
            return rc;
        }
        rc = cuda_status(cudaMemGetInfo(&fr, &tot), "device_info: cudaMemGetInfo", msg, msglen);
        cudaSetDevice(cur);
        if (rc != SD_CUDA_OK) {
            return rc;
        }
        *free_bytes = fr;
    }
    if (total_bytes != nullptr) {
        *total_bytes = tot;
    }
    return SD_CUDA_OK;
}

extern "C" int sd_cuda_runtime_version(int *runtime, int *driver, char *msg, size_t msglen) {
    int rc = SD_CUDA_OK;
    if (runtime != nullptr) {
        rc = cuda_status(cudaRuntimeGetVersion(runtime), "runtime_version", msg, msglen);
    }
    if (rc == SD_CUDA_OK && driver != nullptr) {
        rc = cuda_status(cudaDriverGetVersion(driver), "driver_version", msg, msglen);
    }
    return rc;
}

extern "C" int sd_cuda_mem_info(size_t *free_bytes, size_t *total_bytes, char *msg, size_t msglen) {
    if (free_bytes == nullptr || total_bytes == nullptr) {
        return fail(msg, msglen, SD_CUDA_EINVAL, "mem_info: NULL argument");
    }
    return cuda_status(cudaMemGetInfo(free_bytes, total_bytes), "mem_info", msg, msglen);
}

extern "C" int sd_cuda_malloc(void **ptr, size_t bytes, char *msg, size_t msglen) {
    if (ptr == nullptr) {
        return fail(msg, msglen, SD_CUDA_EINVAL, "malloc: ptr is NULL");
    }
    *ptr = nullptr;
    if (bytes == 0) {
        return SD_CUDA_OK;
    }
    cudaError_t e = cudaMalloc(ptr, bytes);
    if (e != cudaSuccess) {
        cudaGetLastError();
        *ptr = nullptr;
        return fail(msg, msglen, e == cudaErrorMemoryAllocation ? SD_CUDA_ENOMEM : SD_CUDA_ECUDA,
                    "malloc %zu bytes: %s", bytes, cudaGetErrorString(e));
    }
    return SD_CUDA_OK;
}

extern "C" int sd_cuda_free(void *ptr, char *msg, size_t msglen) {
    if (ptr == nullptr) {
        return SD_CUDA_OK;
    }
    return cuda_status(cudaFree(ptr), "free", msg, msglen);
}

static int copy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind, sd_cuda_stream s,
                const char *op, char *msg, size_t msglen) {
    if (bytes == 0) {
        return SD_CUDA_OK;
    }
    if (dst == nullptr || src == nullptr) {
        return fail(msg, msglen, SD_CUDA_EINVAL, "%s: NULL pointer", op);
    }
    cudaStream_t st = static_cast<cudaStream_t>(s);
    int rc = cuda_status(cudaMemcpyAsync(dst, src, bytes, kind, st), op, msg, msglen);
    if (rc == SD_CUDA_OK && kind == cudaMemcpyDeviceToHost) {
        // Pageable destinations are already complete here; pinned ones are not.
        rc = cuda_status(cudaStreamSynchronize(st), op, msg, msglen);
    }
    return rc;
}

extern "C" int sd_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes, sd_cuda_stream s, char *msg,
                                  size_t msglen) {
    // cudaMemcpyAsync from pageable memory returns once src has been staged,
    // so the Go caller may reuse its slice right after this call.
    return copy(dst, src, bytes, cudaMemcpyHostToDevice, s, "memcpy_h2d", msg, msglen);
}

extern "C" int sd_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes, sd_cuda_stream s, char *msg,
                                  size_t msglen) {
    return copy(dst, src, bytes, cudaMemcpyDeviceToHost, s, "memcpy_d2h", msg, msglen);
}

extern "C" int sd_cuda_memcpy_d2d(void *dst, const void *src, size_t bytes, sd_cuda_stream s, char *msg,
                                  size_t msglen) {
    return copy(dst, src, bytes, cudaMemcpyDeviceToDevice, s, "memcpy_d2d", msg, msglen);
}

extern "C" int sd_cuda_memset(void *dst, int v, size_t bytes, sd_cuda_stream s, char *msg, size_t msglen) {
    if (bytes == 0) {
        return SD_CUDA_OK;
    }
    return cuda_status(cudaMemsetAsync(dst, v, bytes, static_cast<cudaStream_t>(s)), "memset", msg, msglen);
}

extern "C" int sd_cuda_stream_create(sd_cuda_stream *s, char *msg, size_t msglen) {
    cudaStream_t st = nullptr;
    int rc = cuda_status(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "stream_create", msg, msglen);
    *s = rc == SD_CUDA_OK ? static_cast<sd_cuda_stream>(st) : nullptr;
    return rc;
}

extern "C" int sd_cuda_stream_destroy(sd_cuda_stream s, char *msg, size_t msglen) {
    if (s == nullptr) {
        return SD_CUDA_OK;
    }
    return cuda_status(cudaStreamDestroy(static_cast<cudaStream_t>(s)), "stream_destroy", msg, msglen);
}

extern "C" int sd_cuda_stream_sync(sd_cuda_stream s, char *msg, size_t msglen) {
    return cuda_status(cudaStreamSynchronize(static_cast<cudaStream_t>(s)), "stream_sync", msg, msglen);
}

extern "C" int sd_cuda_event_create(void **ev, char *msg, size_t msglen) {
    cudaEvent_t e = nullptr;
    int rc = cuda_status(cudaEventCreate(&e), "event_create", msg, msglen);
    *ev = rc == SD_CUDA_OK ? static_cast<void *>(e) : nullptr;
    return rc;
}

extern "C" int sd_cuda_event_destroy(void *ev, char *msg, size_t msglen) {
    if (ev == nullptr) {
        return SD_CUDA_OK;
    }
    return cuda_status(cudaEventDestroy(static_cast<cudaEvent_t>(ev)), "event_destroy", msg, msglen);
}

extern "C" int sd_cuda_event_record(void *ev, sd_cuda_stream s, char *msg, size_t msglen) {
    return cuda_status(cudaEventRecord(static_cast<cudaEvent_t>(ev), static_cast<cudaStream_t>(s)),
                       "event_record", msg, msglen);
}

extern "C" int sd_cuda_stream_wait_event(sd_cuda_stream s, void *ev, char *msg, size_t msglen) {
    if (ev == nullptr) {
        return fail(msg, msglen, SD_CUDA_EINVAL, "stream_wait_event: NULL event");
    }
    return cuda_status(cudaStreamWaitEvent(static_cast<cudaStream_t>(s), static_cast<cudaEvent_t>(ev), 0),
                       "stream_wait_event", msg, msglen);
}

extern "C" int sd_cuda_event_elapsed(float *ms, void *start, void *end, char *msg, size_t msglen) {
    int rc = cuda_status(cudaEventSynchronize(static_cast<cudaEvent_t>(end)), "event_elapsed", msg, msglen);
    if (rc != SD_CUDA_OK) {
        return rc;
    }
    return cuda_status(
        cudaEventElapsedTime(ms, static_cast<cudaEvent_t>(start), static_cast<cudaEvent_t>(end)),
        "event_elapsed", msg, msglen);
}
