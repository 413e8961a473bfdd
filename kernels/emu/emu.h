// emu.h: a small host emulation of the CUDA features gosd's kernels use, so
// their index math, tiling, masking and synchronisation can be checked with
// g++ alone on machines without a GPU (see emu_test.cpp and run.sh). Every
// CUDA thread is a fiber on the launching OS thread; a block's threads share
// function-level statics (blocks run one at a time); __syncthreads and
// __syncwarp are barriers; warp shuffles go through a per-warp buffer. WMMA fragments hold
// the whole 16x16 tile in every lane (documented element mapping of
// load/store_matrix_sync; no hardware register layout), with a warp barrier
// around each collective so lanes stay in lockstep as on the GPU.
// Not emulated: memory coalescing, bank conflicts, occupancy, timing.
#pragma once

#include <algorithm>
#include <sys/mman.h>
#include <ucontext.h>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

using std::max;
using std::min;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

namespace emu {
// Every CUDA thread of a block is a fiber on the launching OS
// thread; a barrier parks the fiber until all its participants arrived, and
// a round-robin scheduler resumes runnable fibers. Switching only at
// barriers keeps the emulation deterministic and far cheaper than one OS
// thread per CUDA thread.
struct Bar {
    unsigned expected = 0, count = 0, gen = 0;
};
#if defined(__x86_64__)
// A fiber switch saves the callee-saved registers on the old stack and pops
// them from the new one (no signal-mask system call, unlike swapcontext).
extern "C" void emu_switch(void **save_sp, void *load_sp);
asm(R"(
    .text
    .weak emu_switch
    .type emu_switch,@function
emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
)");
struct Ctx {
    void *sp = nullptr;
};
inline void ctx_switch(Ctx *from, Ctx *to) { emu_switch(&from->sp, to->sp); }
// ctx_init makes ctx start fn on the stack [base, base+size).
inline void ctx_init(Ctx *ctx, unsigned char *base, size_t size, void (*fn)()) {
    uintptr_t top = (reinterpret_cast<uintptr_t>(base) + size) & ~uintptr_t(15);
    void **sp = reinterpret_cast<void **>(top);
    *--sp = nullptr;                          // fn's return address: fn never returns
    *--sp = reinterpret_cast<void *>(fn);     // emu_switch's ret enters fn with rsp = 8 mod 16
    for (int i = 0; i < 6; i++) {
        *--sp = nullptr;                      // rbp, rbx, r12-r15
    }
    ctx->sp = sp;
}
#else
struct Ctx {
    ucontext_t uc;
};
inline void ctx_switch(Ctx *from, Ctx *to) { swapcontext(&from->uc, &to->uc); }
inline void ctx_init(Ctx *ctx, unsigned char *base, size_t size, void (*fn)()) {
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = base;
    ctx->uc.uc_stack.ss_size = size;
    ctx->uc.uc_link = nullptr;
    makecontext(&ctx->uc, fn, 0);
}
#endif

struct Fiber {
    Ctx ctx;
    unsigned tid = 0;
    bool done = false;
    int wait = -1; // barrier waited on, -1 when runnable
    unsigned gen = 0;
};
struct Block {
    std::vector<Bar> bars; // 0: the block, 1 + w: warp w
    std::vector<Fiber> fibers;
    std::vector<float> shfl; // 32 slots per warp
    unsigned char *smem = nullptr;
    Ctx sched;
    Fiber *cur = nullptr;
    std::function<void()> body;
};
inline thread_local Block *blk = nullptr;
inline thread_local unsigned tid_flat = 0;
} // namespace emu

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

namespace emu {
inline void arrive(int i) {
    Bar &b = blk->bars[i];
    if (++b.count >= b.expected) {
        b.count = 0;
        b.gen++;
        return;
    }
    Fiber *f = blk->cur;
    f->wait = i;
    f->gen = b.gen;
    ctx_switch(&f->ctx, &blk->sched);
}
// drop removes a finished thread from barrier i (std::barrier's arrive_and_drop).
inline void drop(int i) {
    Bar &b = blk->bars[i];
    b.expected--;
    if (b.count > 0 && b.count >= b.expected) {
        b.count = 0;
        b.gen++;
    }
}
} // namespace emu

inline void __syncthreads() { emu::arrive(0); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::arrive(1 + emu::tid_flat / 32); }

template <typename T> inline T __shfl_xor_sync(unsigned, T v, int o) {
    static_assert(sizeof(T) == sizeof(float), "32-bit shuffles only");
    unsigned lane = emu::tid_flat % 32, w = emu::tid_flat / 32;
    float *buf = &emu::blk->shfl[w * 32];
    std::memcpy(&buf[lane], &v, sizeof v);
    __syncwarp();
    T r;
    std::memcpy(&r, &buf[lane ^ o], sizeof r);
    __syncwarp();
    return r;
}

inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

// 16-bit types with round-to-nearest-even conversions.
struct __half {
    _Float16 h;
};
inline __half __float2half_rn(float f) { return __half{(_Float16)f}; }
inline float __half2float(__half h) { return (float)h.h; }
struct __nv_bfloat16 {
    uint16_t b;
};
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40)};
    }
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}
inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t u = (uint32_t)b.b << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// Runtime API stubs used by the launchers.
typedef int cudaError_t;
typedef void *cudaStream_t;
enum { cudaSuccess = 0, cudaErrorMemoryAllocation = 2, cudaErrorNoDevice = 100, cudaErrorInsufficientDriver = 35 };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char *cudaGetErrorString(cudaError_t) { return "emulated error"; }
inline const char *cudaGetErrorName(cudaError_t) { return "emulatedError"; }
template <typename F> inline cudaError_t cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return cudaSuccess; }

namespace emu {
[[noreturn]] inline void fiber_entry() {
    Fiber *f = blk->cur;
    blk->body();
    f->done = true;
    // A returning thread must not block the others' barriers.
    drop(0);
    drop(1 + f->tid / 32);
    ctx_switch(&f->ctx, &blk->sched); // never resumed
    abort();
}

// stacks returns nt fiber stacks of kStack bytes, reused across launches on
// this OS thread (mapped lazily: only touched pages cost memory).
constexpr size_t kStack = 256 << 10;
inline unsigned char *stacks(unsigned nt) {
    static thread_local unsigned char *base = nullptr;
    static thread_local unsigned have = 0;
    if (nt > have) {
        if (base != nullptr) {
            munmap(base, have * kStack);
        }
        void *p = mmap(nullptr, nt * kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) {
            fprintf(stderr, "emu: cannot map %u fiber stacks\n", nt);
            abort();
        }
        base = static_cast<unsigned char *>(p);
        have = nt;
    }
    return base;
}

// launch runs kernel over the grid, one block at a time, each CUDA thread a
// fiber, with smem bytes of dynamic shared memory.
template <typename... P> struct Launch {
    void (*kernel)(P...);
    dim3 grid, block;
    size_t smem;
    template <typename... A> void operator()(A... args) const {
        unsigned nt = block.x * block.y * block.z;
        unsigned char *stk = stacks(nt);
        Block *outer = blk; // a launcher may run inside no kernel only; keep it tidy anyway
        for (unsigned bz = 0; bz < grid.z; bz++) {
            for (unsigned by = 0; by < grid.y; by++) {
                for (unsigned bx = 0; bx < grid.x; bx++) {
                    Block b;
                    unsigned nw = (nt + 31) / 32;
                    b.bars.resize(1 + nw);
                    b.bars[0].expected = nt;
                    for (unsigned w = 0; w < nw; w++) {
                        b.bars[1 + w].expected = std::min(32u, nt - 32 * w);
                    }
                    b.shfl.assign(32 * nw, 0.0f);
                    std::vector<unsigned char> mem(smem + 256);
                    b.smem = reinterpret_cast<unsigned char *>(
                        (reinterpret_cast<uintptr_t>(mem.data()) + 127) / 128 * 128);
                    std::memset(b.smem, 0xcd, smem); // garbage, as on the GPU
                    b.body = [&] { kernel(static_cast<P>(args)...); };
                    b.fibers.resize(nt);
                    blk = &b;
                    blockIdx = dim3(bx, by, bz);
                    blockDim = block;
                    gridDim = grid;
                    for (unsigned t = 0; t < nt; t++) {
                        Fiber &f = b.fibers[t];
                        f.tid = t;
                        ctx_init(&f.ctx, stk + size_t(t) * kStack, kStack, fiber_entry);
                    }
                    unsigned finished = 0;
                    while (finished < nt) {
                        bool progress = false;
                        for (auto &f : b.fibers) {
                            if (f.done || (f.wait >= 0 && b.bars[f.wait].gen == f.gen)) {
                                continue;
                            }
                            f.wait = -1;
                            b.cur = &f;
                            tid_flat = f.tid;
                            threadIdx = dim3(f.tid % block.x, (f.tid / block.x) % block.y, f.tid / (block.x * block.y));
                            ctx_switch(&b.sched, &f.ctx);
                            progress = true;
                            finished += f.done;
                        }
                        if (!progress) {
                            fprintf(stderr, "emu: deadlock: every live thread waits at a barrier\n");
                            abort();
                        }
                    }
                }
            }
        }
        blk = outer;
    }
};
template <typename... P> Launch<P...> launch(void (*k)(P...), dim3 g, dim3 b, size_t smem = 0, cudaStream_t = nullptr) {
    return Launch<P...>{k, g, b, smem};
}
inline unsigned char *dyn_smem() { return blk->smem; }
} // namespace emu

// WMMA: every lane holds the full tile.
namespace nvcuda {
namespace wmma {
struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void> struct fragment {
    float v[16 * 16];
};

inline float tof(float x) { return x; }
inline float tof(__half x) { return __half2float(x); }
inline float tof(__nv_bfloat16 x) { return __bfloat162float(x); }

inline void warp_sync() { __syncwarp(); }

template <typename T, typename L> void load_matrix_sync(fragment<matrix_a, 16, 16, 16, T, L> &f, const T *p, unsigned ldm) {
    warp_sync();
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.v[r * 16 + c] = tof(std::is_same<L, row_major>::value ? p[r * ldm + c] : p[c * ldm + r]);
    warp_sync();
}
template <typename T, typename L> void load_matrix_sync(fragment<matrix_b, 16, 16, 16, T, L> &f, const T *p, unsigned ldm) {
    warp_sync();
    for (int k = 0; k < 16; k++)
        for (int n = 0; n < 16; n++)
            f.v[k * 16 + n] = tof(std::is_same<L, row_major>::value ? p[k * ldm + n] : p[n * ldm + k]);
    warp_sync();
}
inline void load_matrix_sync(fragment<accumulator, 16, 16, 16, float> &f, const float *p, unsigned ldm, layout_t l) {
    warp_sync();
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < 16; c++)
            f.v[r * 16 + c] = l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
    warp_sync();
}
inline void store_matrix_sync(float *p, const fragment<accumulator, 16, 16, 16, float> &f, unsigned ldm, layout_t l) {
    warp_sync();
    if (emu::tid_flat % 32 == 0)
        for (int r = 0; r < 16; r++)
            for (int c = 0; c < 16; c++)
                (l == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.v[r * 16 + c];
    warp_sync();
}
inline void fill_fragment(fragment<accumulator, 16, 16, 16, float> &f, float x) {
    for (float &e : f.v)
        e = x;
}
template <typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float> &d, const fragment<matrix_a, 16, 16, 16, T, LA> &a,
              const fragment<matrix_b, 16, 16, 16, T, LB> &b, const fragment<accumulator, 16, 16, 16, float> &c) {
    float out[256];
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            float s = c.v[m * 16 + n];
            for (int k = 0; k < 16; k++)
                s += a.v[m * 16 + k] * b.v[k * 16 + n];
            out[m * 16 + n] = s;
        }
    std::memcpy(d.v, out, sizeof out);
}
} // namespace wmma
} // namespace nvcuda
