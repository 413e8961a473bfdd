package tensor

import (
	"errors"
	"fmt"
	"time"
	"unsafe"

	"github.com/gosd/gosd/bindings/cpu"
)

// CPU is the native CPU backend: C kernels (csrc/) called through cgo, with
// AVX-512 micro-kernels chosen at run time and a portable C path for other
// CPUs (forced with the environment variable GOSD_CPU=portable). It checks
// shapes and dtypes in Go before crossing into C. Kernels use all CPUs unless
// SetThreads says otherwise. Matrix products run in f32 unless SetPrecision
// (or GOSD_PRECISION=bf16) selects bf16 (AVX512-BF16), where weights are
// packed once into a bounded cache (SetCPUWeightCache).
type CPU struct{}

var _ Backend = (*CPU)(nil)

// NewCPU returns the native CPU backend.
func NewCPU() *CPU { return &CPU{} }

// Name reports the kernel family in use: "cpu/avx512", "cpu/avx512-bf16"
// (bf16 precision on an AVX512-BF16 CPU) or "cpu/portable".
func (*CPU) Name() string {
	if cpu.ISA() == cpu.ISAAVX512 {
		if cpu.BF16Active() {
			return "cpu/avx512-bf16"
		}
		return "cpu/avx512"
	}
	return "cpu/portable"
}

// SetPrecision selects, for the whole process, the precision of the matrix
// products of Linear, Conv2D and Attention: "f32" (the default; exact f32
// products), "bf16" (activations and weights rounded to bf16, products
// accumulated in f32 with AVX512-BF16; about twice the f32 speed, relative
// error about 2^-9 per product) or "auto" (the environment variable
// GOSD_PRECISION, else f32). On a CPU without AVX512-BF16, "bf16" keeps the
// f32 kernels (Name tells which run). MatMul stays f32.
func (*CPU) SetPrecision(p string) error {
	v := -1
	switch p {
	case "auto":
	case "f32":
		v = cpu.PrecF32
	case "bf16":
		v = cpu.PrecBF16
	default:
		return fmt.Errorf("tensor: unknown CPU precision %q (want f32, bf16 or auto)", p)
	}
	return cpu.SetPrecision(v)
}

// Precision returns the precision the matrix products run in: "bf16" only
// when it is selected and the bf16 kernels are active on this CPU (not under
// GOSD_CPU=portable), else "f32".
func (*CPU) Precision() string {
	if cpu.Precision() == cpu.PrecBF16 && cpu.BF16Active() {
		return "bf16"
	}
	return "f32"
}

// CPUHasBF16 reports whether this CPU has AVX512-BF16 (VDPBF16PS).
func CPUHasBF16() bool { return cpu.HasBF16() }

// SetCPUWeightCache sets the memory budget (bytes) of the cache of weights
// packed once in bf16 panels (bf16 precision only; 0 disables and empties it)
// and returns the bytes in use; a negative limit only queries. Default:
// GOSD_WEIGHT_CACHE_MB MiB, else 4 GiB. Entries are keyed by the weight's
// address, dtype and shape and checked against a fingerprint of sampled
// elements on every call (for weights in read-only file mappings, whose
// pages the cache releases: the first and last 32 elements). Code that
// unmaps a checkpoint and maps another in its place, or edits weights in
// place, should empty the cache with ClearCPUWeightCache.
func SetCPUWeightCache(limit int64) int64 { return cpu.SetWeightCache(limit) }

// ClearCPUWeightCache empties the packed-weight cache and keeps its budget;
// call it after unmapping a checkpoint whose weights were used.
func ClearCPUWeightCache() { cpu.ClearWeightCache() }

// CPUWorkTime returns the thread-time the CPU kernels' threads have spent
// working inside their parallel regions since the process started (not
// counting waits at the end of a region for the other threads). Over an
// interval in which kernels ran for wall time W on T threads, T·W minus its
// growth is the core time left idle inside the kernels.
func CPUWorkTime() time.Duration { return time.Duration(cpu.WorkNanos()) }

// NoteFileMapping tells the CPU backend that data is a read-only mapping
// of a file (mapped true), or is about to be unmapped (mapped false): once a
// weight in it is packed, its pages are released from memory (they read
// back from the file). Checkpoint loaders call it around mmap and munmap.
func NoteFileMapping(data []byte, mapped bool) { cpu.FileMapping(data, mapped) }

// ReleaseCPUWeights drops the packed copies of these weights (and of any
// weight whose data starts inside one of them) from the packed-weight cache
// and returns the bytes freed; weights in a checkpoint's file mapping (see
// NoteFileMapping) also leave resident memory. The weights stay usable: a
// later call reads and packs them again.
func ReleaseCPUWeights(ws []*Tensor) int64 {
	var lo, hi []uintptr
	for _, w := range ws {
		if w == nil {
			continue
		}
		var p unsafe.Pointer
		var n uintptr
		switch {
		case len(w.F32) > 0:
			p, n = unsafe.Pointer(&w.F32[0]), uintptr(len(w.F32))*4
		case len(w.Half) > 0:
			p, n = unsafe.Pointer(&w.Half[0]), uintptr(len(w.Half))*2
		default:
			continue
		}
		lo = append(lo, uintptr(p))
		hi = append(hi, uintptr(p)+n)
	}
	return cpu.EvictWeights(lo, hi)
}

// SetThreads sets the number of threads the native kernels use (process
// wide); n <= 0 means all CPUs.
func (*CPU) SetThreads(n int) { cpu.SetThreads(n) }

// Threads returns the number of threads the native kernels use.
func (*CPU) Threads() int { return cpu.Threads() }

// SetKernels selects the kernel family for the whole process: "avx512",
// "portable", or "auto" (the best the CPU supports unless GOSD_CPU=portable).
func (*CPU) SetKernels(name string) error {
	isa := -1
	switch name {
	case "auto":
	case "portable":
		isa = cpu.ISAPortable
	case "avx512":
		isa = cpu.ISAAVX512
	default:
		return fmt.Errorf("tensor: unknown CPU kernel family %q", name)
	}
	return cpu.SetISA(isa)
}

// CPUHasAVX512 reports whether this CPU can run the AVX-512 kernels.
func CPUHasAVX512() bool { return cpu.HasAVX512() }

// wt converts a weight tensor (possibly nil) for the binding.
func wt(t *Tensor) cpu.Weight {
	if t == nil {
		return cpu.Weight{}
	}
	return cpu.Weight{F32: t.F32, Half: t.Half, DType: int(t.DType)}
}

// opErr wraps a binding error as an *OpError.
func opErr(op string, err error, w *Tensor, ts ...*Tensor) error {
	if err == nil {
		return nil
	}
	kind := ErrBackend
	var ce *cpu.Error
	if errors.As(err, &ce) {
		switch ce.Status {
		case cpu.StatusArg:
			kind = ErrShape
		case cpu.StatusDType:
			kind = ErrDType
		}
	}
	e := &OpError{Op: op, Shapes: shapes(ts...), Err: kind, Detail: err.Error()}
	if w != nil {
		e.DType = w.DType
	}
	return e
}

func (*CPU) Linear(y, x, w, b *Tensor) error {
	if err := onHost("linear", y, x, w, b); err != nil {
		return err
	}
	if err := checkLinear(y, x, w, b); err != nil {
		return err
	}
	n, k := w.Shape[0], w.Shape[1]
	m := Numel(x.Shape[:len(x.Shape)-1])
	return opErr("linear", cpu.Linear(y.F32, x.F32, wt(w), wt(b), m, n, k), w, x, w, b, y)
}

func (*CPU) MatMul(y, a, b *Tensor) error {
	if err := onHost("matmul", y, a, b); err != nil {
		return err
	}
	if err := checkMatMul(y, a, b); err != nil {
		return err
	}
	m, k, n := a.Shape[0], a.Shape[1], b.Shape[1]
	return opErr("matmul", cpu.MatMul(y.F32, a.F32, b.F32, m, n, k), nil, a, b, y)
}

func (*CPU) Conv2D(y, x, w, b *Tensor, p Conv2DParams) error {
	if err := onHost("conv2d", y, x, w, b); err != nil {
		return err
	}
	if err := checkConv2D(y, x, w, b, p); err != nil {
		return err
	}
	bs, c, h, wd := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	o, kh, kw := w.Shape[0], w.Shape[2], w.Shape[3]
	ho, wo := y.Shape[2], y.Shape[3]
	return opErr("conv2d", cpu.Conv2D(y.F32, x.F32, wt(w), wt(b), bs, c, h, wd, o, kh, kw,
		p.Stride, p.PadTop, p.PadLeft, ho, wo), w, x, w, b, y)
}

func (*CPU) GroupNorm(y, x, gamma, beta *Tensor, groups int, eps float32, silu bool) error {
	if err := onHost("group_norm", y, x, gamma, beta); err != nil {
		return err
	}
	if err := checkGroupNorm(y, x, gamma, beta, groups); err != nil {
		return err
	}
	if x.Numel() == 0 {
		return nil
	}
	bs, c := x.Shape[0], x.Shape[1]
	s := x.Numel() / (bs * c)
	return opErr("group_norm", cpu.GroupNorm(y.F32, x.F32, wt(gamma), wt(beta), bs, c, s, groups, eps, silu),
		gamma, x, gamma, beta)
}

func (*CPU) LayerNorm(y, x, gamma, beta *Tensor, eps float32) error {
	if err := onHost("layer_norm", y, x, gamma, beta); err != nil {
		return err
	}
	if err := checkLayerNorm(y, x, gamma, beta); err != nil {
		return err
	}
	c := x.Dim(-1)
	if x.Numel() == 0 {
		return nil
	}
	return opErr("layer_norm", cpu.LayerNorm(y.F32, x.F32, wt(gamma), wt(beta), x.Numel()/c, c, eps),
		gamma, x, gamma, beta)
}

func (*CPU) Attention(y, q, k, v *Tensor, heads int, causal bool) error {
	if err := onHost("attention", y, q, k, v); err != nil {
		return err
	}
	if err := checkAttention(y, q, k, v, heads, causal); err != nil {
		return err
	}
	bs, lq, lk, hd := q.Shape[0], q.Shape[1], k.Shape[1], q.Shape[2]
	return opErr("attention", cpu.Attention(y.F32, q.F32, k.F32, v.F32, bs, lq, lk, heads, hd/heads, causal),
		nil, q, k, v)
}

func (*CPU) Unary(y, x *Tensor, op Unary) error {
	if err := onHost("unary", y, x); err != nil {
		return err
	}
	if err := checkUnary(y, x, op); err != nil {
		return err
	}
	return opErr("unary", cpu.Unary(y.F32, x.F32, int(op)), nil, x, y)
}

func (*CPU) Add(y, a, b *Tensor) error {
	if err := onHost("add", y, a, b); err != nil {
		return err
	}
	if err := checkBinary("add", y, a, b); err != nil {
		return err
	}
	return opErr("add", cpu.Add(y.F32, a.F32, b.F32), nil, a, b, y)
}

func (*CPU) Mul(y, a, b *Tensor) error {
	if err := onHost("mul", y, a, b); err != nil {
		return err
	}
	if err := checkBinary("mul", y, a, b); err != nil {
		return err
	}
	return opErr("mul", cpu.Mul(y.F32, a.F32, b.F32), nil, a, b, y)
}

func (*CPU) Scale(y, x *Tensor, s, t float32) error {
	if err := onHost("scale", y, x); err != nil {
		return err
	}
	if err := checkScale(y, x); err != nil {
		return err
	}
	return opErr("scale", cpu.Scale(y.F32, x.F32, s, t), nil, x, y)
}

func (*CPU) AddChannel(y, x, c *Tensor) error {
	if err := onHost("add_channel", y, x, c); err != nil {
		return err
	}
	if err := checkAddChannel(y, x, c); err != nil {
		return err
	}
	p := c.Numel()
	if p == 0 {
		return nil
	}
	return opErr("add_channel", cpu.AddChannel(y.F32, x.F32, c.F32, p, x.Numel()/p), nil, x, c)
}

func (*CPU) GEGLU(y, x *Tensor) error {
	if err := onHost("geglu", y, x); err != nil {
		return err
	}
	if err := checkGEGLU(y, x); err != nil {
		return err
	}
	n := x.Dim(-1) / 2
	rows := Numel(x.Shape[:len(x.Shape)-1])
	return opErr("geglu", cpu.GEGLU(y.F32, x.F32, rows, n), nil, x, y)
}

func (*CPU) Transpose(y, x *Tensor) error {
	if err := onHost("transpose", y, x); err != nil {
		return err
	}
	if err := checkTranspose(y, x); err != nil {
		return err
	}
	return opErr("transpose", cpu.Transpose(y.F32, x.F32, x.Shape[0], x.Shape[1], x.Shape[2]), nil, x, y)
}

func (*CPU) Concat(y, a, b *Tensor) error {
	if err := onHost("concat", y, a, b); err != nil {
		return err
	}
	if err := checkConcat(y, a, b); err != nil {
		return err
	}
	bs := a.Shape[0]
	if bs == 0 {
		return nil
	}
	return opErr("concat", cpu.Concat(y.F32, a.F32, b.F32, bs, a.Numel()/bs, b.Numel()/bs), nil, a, b, y)
}

func (*CPU) Upsample2x(y, x *Tensor) error {
	if err := onHost("upsample2x", y, x); err != nil {
		return err
	}
	if err := checkUpsample2x(y, x); err != nil {
		return err
	}
	return opErr("upsample2x", cpu.Upsample2x(y.F32, x.F32, x.Shape[0]*x.Shape[1], x.Shape[2], x.Shape[3],
		y.Shape[2], y.Shape[3]), nil, x, y)
}

// HalfToF32 converts an F16 or BF16 tensor x into the F32 tensor y of the same size.
func (*CPU) HalfToF32(y, x *Tensor) error {
	if err := checkF32("cast", y); err != nil {
		return err
	}
	if x == nil || (x.DType != F16 && x.DType != BF16) || len(x.Half) != x.Numel() {
		return &OpError{Op: "cast", Err: ErrDType, Detail: "want an f16 or bf16 source"}
	}
	if x.Numel() != y.Numel() {
		return bad("cast", []*Tensor{x, y}, "want equal sizes")
	}
	return opErr("cast", cpu.HalfToF32(y.F32, x.Half, int(x.DType)), x, x, y)
}

// F32ToHalf converts the F32 tensor x into y (F16 or BF16) of the same size,
// rounding to nearest even.
func (*CPU) F32ToHalf(y, x *Tensor) error {
	if err := checkF32("cast", x); err != nil {
		return err
	}
	if y == nil || (y.DType != F16 && y.DType != BF16) || len(y.Half) != y.Numel() {
		return &OpError{Op: "cast", Err: ErrDType, Detail: "want an f16 or bf16 destination"}
	}
	if x.Numel() != y.Numel() {
		return bad("cast", []*Tensor{x, y}, "want equal sizes")
	}
	return opErr("cast", cpu.F32ToHalf(y.Half, x.F32, int(y.DType)), y, x, y)
}
