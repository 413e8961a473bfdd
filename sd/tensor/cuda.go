//go:build cuda

package tensor

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/gosd/gosd/bindings/cuda"
)

// CUDA is the Backend on an NVIDIA GPU (sm_80 or newer), built with the cuda
// build tag on top of libgosd_cuda (kernels/). Semantics match the CPU
// backend; precision differs where the GPU uses tensor cores:
//
//   - Linear with F16/BF16 weights rounds x to the weight type and multiplies
//     on tensor cores with f32 accumulation (cuBLASLt); F32 weights and MatMul
//     use an f32 GEMM.
//   - Conv2D with F16/BF16 weights rounds x to the weight type while staging
//     (implicit GEMM on tensor cores, f32 accumulation); F32 weights use a
//     direct f32 convolution.
//   - Attention rounds q, k and v to the attention dtype (F16 unless
//     SetAttentionDType says otherwise) for head widths up to 160 and
//     accumulates in f32; wider heads (the VAE's 512) and F32 use an f32 kernel.
//   - Norms and element-wise ops run in f32.
//
// Weights (w, b, gamma, beta) are uploaded once, in their stored dtype, and
// cached by the address, length and dtype of their host slice; the cache
// keeps the host slice alive so the address cannot be reused by another
// allocation. Weights must not be modified after their first use (they are
// read-only by the Tensor contract); ReleaseWeights drops the cache.
//
// TODO: activations make a host round trip on every call (upload the inputs,
// run, download the result), which bounds speed by PCIe bandwidth. Keeping
// them on the device needs a device-storage field on Tensor; see the proposal
// in bench/gpu/README.md.
//
// A CUDA value is safe for concurrent use; calls are serialised on one stream.
type CUDA struct {
	mu      sync.Mutex
	device  int
	name    string
	stream  *cuda.Stream
	blas    *cuda.Blas
	attn    DType
	weights map[weightKey]devWeight
	wbytes  int64
	free    map[int][]cuda.Ptr // idle scratch buffers by size class
	class   map[cuda.Ptr]int   // size class of every scratch buffer
}

type weightKey struct {
	addr uintptr
	n    int
	dt   DType
}

type devWeight struct {
	ptr  cuda.Ptr
	host any // the host slice, kept alive while cached
}

// blasWorkspace is cuBLASLt's scratch space; 32 MiB is what NVIDIA
// recommends for Hopper.
const blasWorkspace = 32 << 20

// NewCUDA opens GPU number device. With no driver or no device the error
// wraps cuda.ErrNoDevice.
func NewCUDA(device int) (*CUDA, error) {
	n, err := cuda.DeviceCount()
	if err != nil {
		return nil, fmt.Errorf("tensor.NewCUDA: %w", err)
	}
	if device < 0 || device >= n {
		return nil, fmt.Errorf("tensor.NewCUDA: device %d out of range (%d devices)", device, n)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cuda.SetDevice(device); err != nil {
		return nil, fmt.Errorf("tensor.NewCUDA: %w", err)
	}
	info, err := cuda.DeviceInfo(device)
	if err != nil {
		return nil, fmt.Errorf("tensor.NewCUDA: %w", err)
	}
	if info.Major < 8 {
		return nil, fmt.Errorf("tensor.NewCUDA: %s has compute capability %d.%d; gosd's kernels need 8.0 or newer",
			info.Name, info.Major, info.Minor)
	}
	s, err := cuda.NewStream()
	if err != nil {
		return nil, fmt.Errorf("tensor.NewCUDA: %w", err)
	}
	bl, err := cuda.NewBlas(blasWorkspace)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("tensor.NewCUDA: %w", err)
	}
	return &CUDA{
		device: device, stream: s, blas: bl, attn: F16,
		name:    fmt.Sprintf("cuda/%s/sm_%d%d", info.Name, info.Major, info.Minor),
		weights: map[weightKey]devWeight{}, free: map[int][]cuda.Ptr{}, class: map[cuda.Ptr]int{},
	}, nil
}

// Name returns "cuda/<device name>/sm_<major><minor>".
func (c *CUDA) Name() string { return c.name }

// SetAttentionDType selects the type q, k and v are rounded to for head
// widths up to 160: F16 (default), BF16, or F32 for the exact f32 kernel.
func (c *CUDA) SetAttentionDType(dt DType) error {
	if dt != F16 && dt != BF16 && dt != F32 {
		return fmt.Errorf("tensor.CUDA: attention dtype %v", dt)
	}
	c.mu.Lock()
	c.attn = dt
	c.mu.Unlock()
	return nil
}

// WeightBytes returns the device memory held by cached weights.
func (c *CUDA) WeightBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.wbytes
}

// ReleaseWeights frees every cached device copy of a weight.
func (c *CUDA) ReleaseWeights() error {
	unlock := c.begin()
	defer unlock()
	var first error
	for k, w := range c.weights {
		if err := cuda.Free(w.ptr); err != nil && first == nil {
			first = err
		}
		delete(c.weights, k)
	}
	c.wbytes = 0
	return first
}

// Close frees all device memory and the stream; c must not be used afterwards.
func (c *CUDA) Close() error {
	err := c.ReleaseWeights()
	unlock := c.begin()
	defer unlock()
	for p := range c.class {
		if e := cuda.Free(p); e != nil && err == nil {
			err = e
		}
	}
	c.class, c.free = map[cuda.Ptr]int{}, map[int][]cuda.Ptr{}
	if e := c.blas.Close(); e != nil && err == nil {
		err = e
	}
	if e := c.stream.Close(); e != nil && err == nil {
		err = e
	}
	return err
}

// begin serialises a call and makes c's device current on this OS thread
// (the CUDA runtime keeps the current device per thread).
func (c *CUDA) begin() func() {
	c.mu.Lock()
	runtime.LockOSThread()
	_ = cuda.SetDevice(c.device) // it succeeded in NewCUDA; a failure shows up in the op itself
	return func() {
		runtime.UnlockOSThread()
		c.mu.Unlock()
	}
}

// sizeClass rounds bytes up to a power of two (at least 4 KiB) so scratch
// buffers can be reused across similar shapes.
func sizeClass(bytes int) int {
	s := 4096
	for s < bytes {
		s <<= 1
	}
	return s
}

// scratch returns a device buffer of at least bytes from the pool.
func (c *CUDA) scratch(bytes int) (cuda.Ptr, error) {
	sc := sizeClass(bytes)
	if l := c.free[sc]; len(l) > 0 {
		p := l[len(l)-1]
		c.free[sc] = l[:len(l)-1]
		return p, nil
	}
	p, err := cuda.Malloc(sc)
	if err != nil {
		return 0, err
	}
	c.class[p] = sc
	return p, nil
}

// release returns scratch buffers to the pool.
func (c *CUDA) release(ps ...cuda.Ptr) {
	for _, p := range ps {
		if sc, ok := c.class[p]; ok && p != 0 {
			c.free[sc] = append(c.free[sc], p)
		}
	}
}

// call collects the scratch buffers of one op so they can be released together.
type call struct {
	c    *CUDA
	bufs []cuda.Ptr
	err  error
}

// upload copies an F32 activation into a fresh scratch buffer.
func (k *call) upload(x []float32) cuda.Ptr {
	p := k.alloc(4 * len(x))
	if k.err == nil {
		k.err = k.c.stream.Upload(p, x)
	}
	return p
}

func (k *call) alloc(bytes int) cuda.Ptr {
	if k.err != nil {
		return 0
	}
	p, err := k.c.scratch(bytes)
	if err != nil {
		k.err = err
		return 0
	}
	k.bufs = append(k.bufs, p)
	return p
}

func (k *call) download(y []float32, p cuda.Ptr) {
	if k.err == nil {
		k.err = k.c.stream.Download(y, p)
	}
}

// weight returns the cached device copy of w (uploading it on first use) and
// its dtype; nil gives the zero Ptr.
func (k *call) weight(w *Tensor) (cuda.Ptr, cuda.DType) {
	if w == nil || k.err != nil {
		return 0, cuda.F32
	}
	var key weightKey
	var host any
	var bytes int
	if w.DType == F32 {
		key = weightKey{uintptr(unsafe.Pointer(unsafe.SliceData(w.F32))), len(w.F32), F32}
		host, bytes = w.F32, 4*len(w.F32)
	} else {
		key = weightKey{uintptr(unsafe.Pointer(unsafe.SliceData(w.Half))), len(w.Half), w.DType}
		host, bytes = w.Half, 2*len(w.Half)
	}
	dt := cuda.DType(w.DType)
	if d, ok := k.c.weights[key]; ok {
		return d.ptr, dt
	}
	p, err := cuda.Malloc(bytes)
	if err == nil {
		if err = k.c.stream.Upload(p, host); err != nil {
			cuda.Free(p)
		}
	}
	if err != nil {
		k.err = err
		return 0, dt
	}
	k.c.weights[key] = devWeight{ptr: p, host: host}
	k.c.wbytes += int64(bytes)
	return p, dt
}

// done releases the call's buffers and wraps a failure as an *OpError.
func (k *call) done(op string, w *Tensor, ts ...*Tensor) error {
	k.c.release(k.bufs...)
	if k.err == nil {
		return nil
	}
	kind := ErrBackend
	var ce *cuda.Error
	if errors.As(k.err, &ce) && ce.Status == cuda.StatusInvalid {
		kind = ErrShape
	}
	e := &OpError{Op: op, Shapes: shapes(ts...), Err: kind, Detail: k.err.Error()}
	if w != nil {
		e.DType = w.DType
	}
	return e
}

func (c *CUDA) Linear(y, x, w, b *Tensor) error {
	if err := checkLinear(y, x, w, b); err != nil {
		return err
	}
	unlock := c.begin()
	defer unlock()
	k := &call{c: c}
	n, kk := w.Shape[0], w.Shape[1]
	m := x.Numel() / kk
	wd, wdt := k.weight(w)
	bd, bdt := k.weight(b)
	xd := k.upload(x.F32)
	yd := k.alloc(4 * m * n)
	var xs cuda.Ptr
	if wdt != cuda.F32 {
		xs = k.alloc(2 * m * kk)
	}
	if k.err == nil {
		k.err = c.blas.Linear(c.stream, wdt, yd, xd, wd, bd, bdt, xs, m, n, kk)
	}
	k.download(y.F32, yd)
	return k.done("linear", w, x, w, b, y)
}

func (c *CUDA) MatMul(y, a, b *Tensor) error {
	if err := checkMatMul(y, a, b); err != nil {
		return err
	}
	unlock := c.begin()
	defer unlock()
	k := &call{c: c}
	m, kk, n := a.Shape[0], a.Shape[1], b.Shape[1]
	ad, bd := k.upload(a.F32), k.upload(b.F32)
	yd := k.alloc(4 * m * n)
	if k.err == nil {
		k.err = c.blas.MatMul(c.stream, yd, ad, bd, m, kk, n)
	}
	k.download(y.F32, yd)
	return k.done("matmul", nil, a, b, y)
}

func (c *CUDA) Conv2D(y, x, w, b *Tensor, p Conv2DParams) error {
	if err := checkConv2D(y, x, w, b, p); err != nil {
		return err
	}
	unlock := c.begin()
	defer unlock()
	k := &call{c: c}
	wd, wdt := k.weight(w)
	bd, bdt := k.weight(b)
	xd := k.upload(x.F32)
	yd := k.alloc(4 * y.Numel())
	sh := cuda.ConvShape{B: x.Shape[0], C: x.Shape[1], H: x.Shape[2], W: x.Shape[3], O: w.Shape[0],
		KH: w.Shape[2], KW: w.Shape[3], Stride: p.Stride,
		PadTop: p.PadTop, PadLeft: p.PadLeft, PadBottom: p.PadBottom, PadRight: p.PadRight}
	if k.err == nil {
		k.err = c.stream.Conv2D(wdt, yd, xd, wd, bd, bdt, sh)
	}
	k.download(y.F32, yd)
	return k.done("conv2d", w, x, w, b, y)
}

func (c *CUDA) GroupNorm(y, x, gamma, beta *Tensor, groups int, eps float32, silu bool) error {
	if err := checkGroupNorm(y, x, gamma, beta, groups); err != nil {
		return err
	}
	if x.Numel() == 0 {
		return nil
	}
	unlock := c.begin()
	defer unlock()
	k := &call{c: c}
	bs, ch := x.Shape[0], x.Shape[1]
	gd, gdt := k.weight(gamma)
	bd, bdt := k.weight(beta)
	xd := k.upload(x.F32)
	if k.err == nil { // in place on the device copy of x
		k.err = c.stream.GroupNorm(xd, xd, gd, gdt, bd, bdt, bs, ch, x.Numel()/(bs*ch), groups, eps, silu)
	}
	k.download(y.F32, xd)
	return k.done("group_norm", gamma, x, gamma, beta)
}

func (c *CUDA) LayerNorm(y, x, gamma, beta *Tensor, eps float32) error {
	if err := checkLayerNorm(y, x, gamma, beta); err != nil {
		return err
	}
	if x.Numel() == 0 {
		return nil
	}
	unlock := c.begin()
	defer unlock()
	k := &call{c: c}
	ch := x.Dim(-1)
	gd, gdt := k.weight(gamma)
	bd, bdt := k.weight(beta)
	xd := k.upload(x.F32)
	if k.err == nil {
		k.err = c.stream.LayerNorm(xd, xd, gd, gdt, bd, bdt, x.Numel()/ch, ch, eps)
	}
	k.download(y.F32, xd)
	return k.done("layer_norm", gamma, x, gamma, beta)
}

// maxF32HeadWidth is the widest head of the f32 attention kernel.
const maxF32HeadWidth = 1024

func (c *CUDA) Attention(y, q, k, v *Tensor, heads int, causal bool) error {
	if err := checkAttention(y, q, k, v, heads, causal); err != nil {
		return err
	}
	bs, lq, lk, hd := q.Shape[0], q.Shape[1], k.Shape[1], q.Shape[2]
	d := hd / heads
	if d > maxF32HeadWidth {
		return bad("attention", []*Tensor{q, k, v}, "head width %d exceeds the CUDA kernels' %d", d, maxF32HeadWidth)
	}
	unlock := c.begin()
	defer unlock()
	kc := &call{c: c}
	qd, kd, vd := kc.upload(q.F32), kc.upload(k.F32), kc.upload(v.F32)
	dt := c.attn
	if d > cuda.AttentionMaxD() {
		dt = F32
	}
	if dt == F32 {
		yd := kc.alloc(4 * y.Numel())
		if kc.err == nil {
			kc.err = c.stream.Attention(cuda.F32, yd, qd, kd, vd, bs, lq, lk, heads, d, causal)
		}
		kc.download(y.F32, yd)
		return kc.done("attention", nil, q, k, v)
	}
	hdt := cuda.DType(dt)
	nq, nk := q.Numel(), k.Numel()
	qh, kh, vh, yh := kc.alloc(2*nq), kc.alloc(2*nk), kc.alloc(2*nk), kc.alloc(2*nq)
	for _, cv := range []struct {
		dst, src cuda.Ptr
		n        int
	}{{qh, qd, nq}, {kh, kd, nk}, {vh, vd, nk}} {
		if kc.err == nil {
			kc.err = c.stream.Cast(cv.dst, cv.src, cv.n, cuda.F32, hdt)
		}
	}
	if kc.err == nil {
		kc.err = c.stream.Attention(hdt, yh, qh, kh, vh, bs, lq, lk, heads, d, causal)
	}
	if kc.err == nil {
		kc.err = c.stream.Cast(qd, yh, nq, hdt, cuda.F32) // q's f32 buffer is free again
	}
	kc.download(y.F32, qd)
	return kc.done("attention", nil, q, k, v)
}

// elementwise runs f on device copies of the inputs and downloads the result
// of size ny elements into y.
func (c *CUDA) elementwise(op string, y *Tensor, ny int, f func(yd cuda.Ptr, in []cuda.Ptr) error,
	ins ...*Tensor) error {
	if ny == 0 {
		return nil
	}
	unlock := c.begin()
	defer unlock()
	k := &call{c: c}
	ds := make([]cuda.Ptr, len(ins))
	for i, t := range ins {
		ds[i] = k.upload(t.F32)
	}
	yd := k.alloc(4 * ny)
	if k.err == nil {
		k.err = f(yd, ds)
	}
	k.download(y.F32, yd)
	return k.done(op, nil, append(ins, y)...)
}

func (c *CUDA) Unary(y, x *Tensor, op Unary) error {
	if err := checkUnary(y, x, op); err != nil {
		return err
	}
	return c.elementwise("unary", y, y.Numel(), func(yd cuda.Ptr, in []cuda.Ptr) error {
		return c.stream.Unary(yd, in[0], x.Numel(), int(op))
	}, x)
}

func (c *CUDA) Add(y, a, b *Tensor) error {
	if err := checkBinary("add", y, a, b); err != nil {
		return err
	}
	return c.elementwise("add", y, y.Numel(), func(yd cuda.Ptr, in []cuda.Ptr) error {
		return c.stream.Add(yd, in[0], in[1], y.Numel())
	}, a, b)
}

func (c *CUDA) Mul(y, a, b *Tensor) error {
	if err := checkBinary("mul", y, a, b); err != nil {
		return err
	}
	return c.elementwise("mul", y, y.Numel(), func(yd cuda.Ptr, in []cuda.Ptr) error {
		return c.stream.Mul(yd, in[0], in[1], y.Numel())
	}, a, b)
}

func (c *CUDA) Scale(y, x *Tensor, s, t float32) error {
	if err := checkScale(y, x); err != nil {
		return err
	}
	return c.elementwise("scale", y, y.Numel(), func(yd cuda.Ptr, in []cuda.Ptr) error {
		return c.stream.Scale(yd, in[0], y.Numel(), s, t)
	}, x)
}

func (c *CUDA) AddChannel(y, x, ch *Tensor) error {
	if err := checkAddChannel(y, x, ch); err != nil {
		return err
	}
	bc := ch.Numel()
	return c.elementwise("add_channel", y, y.Numel(), func(yd cuda.Ptr, in []cuda.Ptr) error {
		return c.stream.AddChannel(yd, in[0], in[1], bc, x.Numel()/bc)
	}, x, ch)
}

func (c *CUDA) GEGLU(y, x *Tensor) error {
	if err := checkGEGLU(y, x); err != nil {
		return err
	}
	n := y.Dim(-1)
	return c.elementwise("geglu", y, y.Numel(), func(yd cuda.Ptr, in []cuda.Ptr) error {
		return c.stream.GEGLU(yd, in[0], y.Numel()/n, n)
	}, x)
}

func (c *CUDA) Transpose(y, x *Tensor) error {
	if err := checkTranspose(y, x); err != nil {
		return err
	}
	return c.elementwise("transpose", y, y.Numel(), func(yd cuda.Ptr, in []cuda.Ptr) error {
		return c.stream.Transpose(yd, in[0], x.Shape[0], x.Shape[1], x.Shape[2])
	}, x)
}

func (c *CUDA) Concat(y, a, b *Tensor) error {
	if err := checkConcat(y, a, b); err != nil {
		return err
	}
	bs := a.Shape[0]
	return c.elementwise("concat", y, y.Numel(), func(yd cuda.Ptr, in []cuda.Ptr) error {
		return c.stream.Concat(yd, in[0], in[1], bs, a.Numel()/bs, b.Numel()/bs)
	}, a, b)
}

func (c *CUDA) Upsample2x(y, x *Tensor) error {
	if err := checkUpsample2x(y, x); err != nil {
		return err
	}
	return c.elementwise("upsample2x", y, y.Numel(), func(yd cuda.Ptr, in []cuda.Ptr) error {
		return c.stream.Upsample2x(yd, in[0], x.Shape[0]*x.Shape[1], x.Shape[2], x.Shape[3])
	}, x)
}

var _ Backend = (*CUDA)(nil)
