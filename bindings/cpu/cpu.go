// Package cpu is the cgo binding of gosd's native CPU kernels (csrc/). Each
// function converts Go slices and ints to the C ABI of csrc/include/gosd_cpu.h,
// calls the kernel and turns a non-zero status into an *Error. Sizes are
// checked by the caller (sd/tensor.CPU); the wrappers only make sure every
// slice is long enough for the sizes passed, so a wrong call returns an error
// instead of touching memory outside a slice.
package cpu

/*
#cgo CFLAGS: -I${SRCDIR}/../../csrc/include -I${SRCDIR}/../../csrc -std=c11 -O3 -fopenmp
#cgo LDFLAGS: -fopenmp -lm
#include <stdlib.h>
#include "gosd_cpu.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Status codes returned by the kernels.
const (
	StatusArg   = 1 // bad size or argument
	StatusDType = 2 // unsupported dtype
	StatusNoMem = 3 // allocation failed
)

// Element types; the values match sd/tensor.DType.
const (
	F32  = 0
	F16  = 1
	BF16 = 2
)

// Kernel families.
const (
	ISAPortable = 0
	ISAAVX512   = 1
)

// Error is a failed kernel call: the kernel's status and message.
type Error struct {
	Op     string
	Status int
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("cpu %s: %s (status %d)", e.Op, e.Msg, e.Status) }

const msgLen = 256

// call runs f with a message buffer and converts its status.
func call(op string, f func(msg *C.char, n C.int) C.int) error {
	var buf [msgLen]byte
	st := f((*C.char)(unsafe.Pointer(&buf[0])), msgLen)
	if st == 0 {
		return nil
	}
	n := 0
	for n < len(buf) && buf[n] != 0 {
		n++
	}
	return &Error{Op: op, Status: int(st), Msg: string(buf[:n])}
}

func short(op, what string, have, want int64) error {
	return &Error{Op: op, Status: StatusArg, Msg: fmt.Sprintf("%s has %d elements, need %d", what, have, want)}
}

// Weight is a read-only array of F32, F16 or BF16 elements: F32 holds them
// when DType is F32, Half (raw 16-bit patterns) otherwise.
type Weight struct {
	F32   []float32
	Half  []uint16
	DType int
}

// len returns the number of elements and a pointer to the first (nil if empty).
func (w Weight) ptr() (unsafe.Pointer, int64) {
	if w.DType == F32 {
		if len(w.F32) == 0 {
			return nil, 0
		}
		return unsafe.Pointer(&w.F32[0]), int64(len(w.F32))
	}
	if len(w.Half) == 0 {
		return nil, 0
	}
	return unsafe.Pointer(&w.Half[0]), int64(len(w.Half))
}

func fp(s []float32) *C.float {
	if len(s) == 0 {
		return nil
	}
	return (*C.float)(unsafe.Pointer(&s[0]))
}

func need(op string, pairs ...any) error {
	for i := 0; i+2 < len(pairs); i += 3 {
		name := pairs[i].(string)
		have := pairs[i+1].(int64)
		want := pairs[i+2].(int64)
		if have < want {
			return short(op, name, have, want)
		}
	}
	return nil
}

// SetThreads sets the number of threads the kernels use; n <= 0 means all CPUs.
func SetThreads(n int) { C.sd_cpu_set_threads(C.int(n)) }

// Threads returns the number of threads the kernels use.
func Threads() int { return int(C.sd_cpu_threads()) }

// HasAVX512 reports whether the CPU can run the AVX-512 kernels.
func HasAVX512() bool { return C.sd_cpu_has_avx512() != 0 }

// SetISA selects the kernel family (ISAPortable, ISAAVX512, or -1 for the
// default: the best available unless GOSD_CPU=portable).
func SetISA(isa int) error {
	return call("set_isa", func(m *C.char, n C.int) C.int { return C.sd_cpu_set_isa(C.int(isa), m, n) })
}

// ISA returns the kernel family in use.
func ISA() int { return int(C.sd_cpu_isa()) }

// Precisions of the matrix products.
const (
	PrecF32  = 0
	PrecBF16 = 1
)

// SetPrecision selects the precision of the matrix products (PrecF32,
// PrecBF16, or -1 for the default: GOSD_PRECISION, else f32).
func SetPrecision(p int) error {
	return call("set_precision", func(m *C.char, n C.int) C.int { return C.sd_cpu_set_precision(C.int(p), m, n) })
}

// Precision returns the precision selected.
func Precision() int { return int(C.sd_cpu_precision()) }

// HasBF16 reports whether the CPU has AVX512-BF16.
func HasBF16() bool { return C.sd_cpu_has_bf16() != 0 }

// BF16Active reports whether the bf16 kernels run (bf16 selected on a CPU that has them).
func BF16Active() bool { return C.sd_cpu_bf16_active() != 0 }

// HasAMX reports whether AMX-BF16 is present and the OS granted tile data.
func HasAMX() bool { return C.sd_cpu_has_amx() != 0 }

// SetWeightCache sets the byte budget of the packed bf16 weight cache (0
// disables and empties it) and returns the bytes in use; limit < 0 only
// queries.
func SetWeightCache(limit int64) int64 { return int64(C.sd_cpu_weight_cache(C.int64_t(limit))) }

// ClearWeightCache drops every cached packed weight and keeps the budget.
func ClearWeightCache() { C.sd_cpu_weight_cache_clear() }

// WorkNanos returns the thread-nanoseconds spent working inside the
// kernels' parallel regions so far (see sd_cpu_work_ns).
func WorkNanos() int64 { return int64(C.sd_cpu_work_ns()) }

// FileMapping registers (add) or unregisters the read-only file mapping
// data, whose pages packing may release (see sd_cpu_file_mapping).
func FileMapping(data []byte, add bool) bool {
	if len(data) == 0 {
		return false
	}
	lo := uintptr(unsafe.Pointer(&data[0]))
	a := C.int(0)
	if add {
		a = 1
	}
	return C.sd_cpu_file_mapping(C.uintptr_t(lo), C.uintptr_t(lo+uintptr(len(data))), a) != 0
}

// EvictWeights drops the cached packed copies of the weights that start in
// one of the byte ranges [lo[i], hi[i]) and returns the bytes freed.
func EvictWeights(lo, hi []uintptr) int64 {
	n := min(len(lo), len(hi))
	if n == 0 {
		return 0
	}
	return int64(C.sd_cpu_weight_cache_evict((*C.uintptr_t)(unsafe.Pointer(&lo[0])),
		(*C.uintptr_t)(unsafe.Pointer(&hi[0])), C.int64_t(n)))
}

// Probe measures the clock (GHz) and one thread's AVX-512 f32 FMA
// throughput (GFLOP/s, 0 without AVX-512) for about seconds.
func Probe(seconds float64) (ghz, gflops float64, err error) {
	var g, f C.double
	err = call("probe", func(m *C.char, n C.int) C.int { return C.sd_cpu_probe(C.double(seconds), &g, &f, m, n) })
	return float64(g), float64(f), err
}

// Linear: x [M, K] f32, w [N, K], b [N] or empty -> y [M, N]; y = x·wᵀ + b.
func Linear(y, x []float32, w, b Weight, m, n, k int) error {
	wp, wl := w.ptr()
	bp, bl := b.ptr()
	M, N, K := int64(m), int64(n), int64(k)
	if bp != nil && bl < N {
		return short("linear", "b", bl, N)
	}
	if err := need("linear", "y", int64(len(y)), M*N, "x", int64(len(x)), M*K, "w", wl, N*K); err != nil {
		return err
	}
	return call("linear", func(ms *C.char, mn C.int) C.int {
		return C.sd_linear(fp(y), fp(x), wp, C.int(w.DType), bp, C.int(b.DType),
			C.int64_t(M), C.int64_t(N), C.int64_t(K), ms, mn)
	})
}

// MatMul: a [M, K], b [K, N] f32 -> y [M, N]; y = a·b.
func MatMul(y, a, b []float32, m, n, k int) error {
	M, N, K := int64(m), int64(n), int64(k)
	if err := need("matmul", "y", int64(len(y)), M*N, "a", int64(len(a)), M*K, "b", int64(len(b)), K*N); err != nil {
		return err
	}
	return call("matmul", func(ms *C.char, mn C.int) C.int {
		return C.sd_matmul_f32(fp(y), fp(a), fp(b), C.int64_t(M), C.int64_t(N), C.int64_t(K), ms, mn)
	})
}

// Conv2D: x [B, C, H, W] f32, w [O, C, kh, kw], bias [O] or empty -> y [B, O, ho, wo]
// with the given stride and top/left zero padding.
func Conv2D(y, x []float32, w, bias Weight, b, c, h, wd, o, kh, kw, stride, padTop, padLeft, ho, wo int) error {
	wp, wl := w.ptr()
	bp, bl := bias.ptr()
	if bp != nil && bl < int64(o) {
		return short("conv2d", "bias", bl, int64(o))
	}
	if err := need("conv2d", "y", int64(len(y)), int64(b*o*ho*wo), "x", int64(len(x)), int64(b*c*h*wd),
		"w", wl, int64(o*c*kh*kw)); err != nil {
		return err
	}
	return call("conv2d", func(ms *C.char, mn C.int) C.int {
		return C.sd_conv2d(fp(y), fp(x), wp, C.int(w.DType), bp, C.int(bias.DType),
			C.int64_t(b), C.int64_t(c), C.int64_t(h), C.int64_t(wd), C.int64_t(o), C.int64_t(kh),
			C.int64_t(kw), C.int64_t(stride), C.int64_t(padTop), C.int64_t(padLeft),
			C.int64_t(ho), C.int64_t(wo), ms, mn)
	})
}

// GroupNorm: x [B, C, S] f32, gamma and beta [C] -> y [B, C, S], optional SiLU.
// y may be x.
func GroupNorm(y, x []float32, gamma, beta Weight, b, c, s, groups int, eps float32, silu bool) error {
	gp, gl := gamma.ptr()
	bp, bl := beta.ptr()
	n := int64(b * c * s)
	if err := need("group_norm", "y", int64(len(y)), n, "x", int64(len(x)), n, "gamma", gl, int64(c),
		"beta", bl, int64(c)); err != nil {
		return err
	}
	fs := C.int(0)
	if silu {
		fs = 1
	}
	return call("group_norm", func(ms *C.char, mn C.int) C.int {
		return C.sd_group_norm(fp(y), fp(x), gp, C.int(gamma.DType), bp, C.int(beta.DType),
			C.int64_t(b), C.int64_t(c), C.int64_t(s), C.int64_t(groups), C.float(eps), fs, ms, mn)
	})
}

// LayerNorm: x [R, C] f32, gamma and beta [C] -> y [R, C]. y may be x.
func LayerNorm(y, x []float32, gamma, beta Weight, rows, c int, eps float32) error {
	gp, gl := gamma.ptr()
	bp, bl := beta.ptr()
	n := int64(rows * c)
	if err := need("layer_norm", "y", int64(len(y)), n, "x", int64(len(x)), n, "gamma", gl, int64(c),
		"beta", bl, int64(c)); err != nil {
		return err
	}
	return call("layer_norm", func(ms *C.char, mn C.int) C.int {
		return C.sd_layer_norm(fp(y), fp(x), gp, C.int(gamma.DType), bp, C.int(beta.DType),
			C.int64_t(rows), C.int64_t(c), C.float(eps), ms, mn)
	})
}

// Attention: q [B, Lq, H*D], k and v [B, Lk, H*D] -> y [B, Lq, H*D].
func Attention(y, q, k, v []float32, b, lq, lk, heads, d int, causal bool) error {
	nq, nk := int64(b*lq*heads*d), int64(b*lk*heads*d)
	if err := need("attention", "y", int64(len(y)), nq, "q", int64(len(q)), nq, "k", int64(len(k)), nk,
		"v", int64(len(v)), nk); err != nil {
		return err
	}
	c := C.int(0)
	if causal {
		c = 1
	}
	return call("attention", func(ms *C.char, mn C.int) C.int {
		return C.sd_attention(fp(y), fp(q), fp(k), fp(v), C.int64_t(b), C.int64_t(lq), C.int64_t(lk),
			C.int64_t(heads), C.int64_t(d), c, ms, mn)
	})
}

// Unary: y[i] = op(x[i]) with op as in sd/tensor.Unary. y may be x.
func Unary(y, x []float32, op int) error {
	n := int64(len(x))
	if err := need("unary", "y", int64(len(y)), n); err != nil {
		return err
	}
	return call("unary", func(ms *C.char, mn C.int) C.int {
		return C.sd_unary(fp(y), fp(x), C.int64_t(n), C.int(op), ms, mn)
	})
}

// Add: y = a + b over len(a) elements.
func Add(y, a, b []float32) error {
	n := int64(len(a))
	if err := need("add", "y", int64(len(y)), n, "b", int64(len(b)), n); err != nil {
		return err
	}
	return call("add", func(ms *C.char, mn C.int) C.int { return C.sd_add(fp(y), fp(a), fp(b), C.int64_t(n), ms, mn) })
}

// Mul: y = a * b over len(a) elements.
func Mul(y, a, b []float32) error {
	n := int64(len(a))
	if err := need("mul", "y", int64(len(y)), n, "b", int64(len(b)), n); err != nil {
		return err
	}
	return call("mul", func(ms *C.char, mn C.int) C.int { return C.sd_mul(fp(y), fp(a), fp(b), C.int64_t(n), ms, mn) })
}

// Scale: y = x*s + t over len(x) elements.
func Scale(y, x []float32, s, t float32) error {
	n := int64(len(x))
	if err := need("scale", "y", int64(len(y)), n); err != nil {
		return err
	}
	return call("scale", func(ms *C.char, mn C.int) C.int {
		return C.sd_scale(fp(y), fp(x), C.float(s), C.float(t), C.int64_t(n), ms, mn)
	})
}

// AddChannel: x [P, S], c [P] -> y[p, s] = x[p, s] + c[p].
func AddChannel(y, x, c []float32, p, s int) error {
	n := int64(p * s)
	if err := need("add_channel", "y", int64(len(y)), n, "x", int64(len(x)), n, "c", int64(len(c)), int64(p)); err != nil {
		return err
	}
	return call("add_channel", func(ms *C.char, mn C.int) C.int {
		return C.sd_add_channel(fp(y), fp(x), fp(c), C.int64_t(p), C.int64_t(s), ms, mn)
	})
}

// GEGLU: x [R, 2N] -> y [R, N], y = x[:, :N] * GELU(x[:, N:]).
func GEGLU(y, x []float32, rows, n int) error {
	if err := need("geglu", "y", int64(len(y)), int64(rows*n), "x", int64(len(x)), int64(rows*2*n)); err != nil {
		return err
	}
	return call("geglu", func(ms *C.char, mn C.int) C.int {
		return C.sd_geglu(fp(y), fp(x), C.int64_t(rows), C.int64_t(n), ms, mn)
	})
}

// Transpose: x [B, M, N] -> y [B, N, M].
func Transpose(y, x []float32, b, m, n int) error {
	t := int64(b * m * n)
	if err := need("transpose", "y", int64(len(y)), t, "x", int64(len(x)), t); err != nil {
		return err
	}
	return call("transpose", func(ms *C.char, mn C.int) C.int {
		return C.sd_transpose(fp(y), fp(x), C.int64_t(b), C.int64_t(m), C.int64_t(n), ms, mn)
	})
}

// Concat: a [B, Na], b [B, Nb] -> y [B, Na+Nb].
func Concat(y, a, b []float32, batch, na, nb int) error {
	if err := need("concat", "y", int64(len(y)), int64(batch*(na+nb)), "a", int64(len(a)), int64(batch*na),
		"b", int64(len(b)), int64(batch*nb)); err != nil {
		return err
	}
	return call("concat", func(ms *C.char, mn C.int) C.int {
		return C.sd_concat(fp(y), fp(a), fp(b), C.int64_t(batch), C.int64_t(na), C.int64_t(nb), ms, mn)
	})
}

// Upsample2x: x [P, H, W] -> y [P, OH, OW], nearest neighbour 2x, with OH
// 2H or 2H-1 and OW 2W or 2W-1 (the odd sizes drop the last row or column).
func Upsample2x(y, x []float32, p, h, w, oh, ow int) error {
	if err := need("upsample2x", "y", int64(len(y)), int64(p*oh*ow), "x", int64(len(x)), int64(p*h*w)); err != nil {
		return err
	}
	return call("upsample2x", func(ms *C.char, mn C.int) C.int {
		return C.sd_upsample2x(fp(y), fp(x), C.int64_t(p), C.int64_t(h), C.int64_t(w), C.int64_t(oh), C.int64_t(ow),
			ms, mn)
	})
}

// HalfToF32 converts len(y) F16 or BF16 values (dt) to f32.
func HalfToF32(y []float32, x []uint16, dt int) error {
	n := int64(len(y))
	if err := need("cast", "x", int64(len(x)), n); err != nil {
		return err
	}
	var xp unsafe.Pointer
	if len(x) > 0 {
		xp = unsafe.Pointer(&x[0])
	}
	return call("cast", func(ms *C.char, mn C.int) C.int { return C.sd_cast_to_f32(fp(y), xp, C.int(dt), C.int64_t(n), ms, mn) })
}

// F32ToHalf converts len(x) f32 values to F16 or BF16 (dt), rounding to nearest even.
func F32ToHalf(y []uint16, x []float32, dt int) error {
	n := int64(len(x))
	if err := need("cast", "y", int64(len(y)), n); err != nil {
		return err
	}
	var yp unsafe.Pointer
	if len(y) > 0 {
		yp = unsafe.Pointer(&y[0])
	}
	return call("cast", func(ms *C.char, mn C.int) C.int {
		return C.sd_cast_from_f32(yp, fp(x), C.int(dt), C.int64_t(n), ms, mn)
	})
}
