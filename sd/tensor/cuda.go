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
// CUDA is a DeviceBackend: tensors from Alloc and ToDevice live in device
// memory, and models that wrap it with OnDevice (the UNet, the VAEs) keep
// every intermediate there, so a UNet evaluation uploads its inputs once,
// queues its kernels on one stream without waiting for them, and waits only
// when the result is copied back. Host activations still work: an op uploads
// them, and downloads a host destination, per call. Device activations come
// from a caching pool of blocks in four size classes per power of two (the
// arena, see sizeClass): after the first step at a given size no call
// allocates device memory, which would make the host wait for the device.
//
// A CUDA value is safe for concurrent use; calls are serialised on one stream.
type CUDA struct {
	mu                  sync.Mutex
	device              int
	name                string
	stream              *cuda.Stream
	blas                *cuda.Blas
	attn                DType
	weights             map[weightKey]devWeight
	wbytes              int64
	free                map[int][]cuda.Ptr // idle scratch buffers by size class
	class               map[cuda.Ptr]int   // size class of every scratch buffer
	live                int                // device tensors not yet freed
	poolBytes, peakPool int64              // device memory of the activation and scratch pool, now and at most
	batches             []*prefetchBatch   // blocks of prefetched weights
	pmu                 sync.Mutex         // one PrefetchWeights at a time
	copy                *cuda.Stream       // PrefetchWeights' upload stream, made on first use
}

type weightKey struct {
	addr uintptr
	n    int
	dt   DType
}

type devWeight struct {
	ptr   cuda.Ptr
	host  any            // the host slice, kept alive while cached
	batch *prefetchBatch // the PrefetchWeights call that uploaded it, else nil
}

// prefetchBatch is one PrefetchWeights call: its weights share one device
// block, and ev marks the end of their uploads on the copy stream.
type prefetchBatch struct {
	block  cuda.Ptr
	ev     *cuda.Event
	waited bool // the compute stream already waits for ev
}

// weightOf returns the cache key, the host slice and the size of w.
func weightOf(w *Tensor) (weightKey, any, int) {
	if w.DType == F32 {
		return weightKey{uintptr(unsafe.Pointer(unsafe.SliceData(w.F32))), len(w.F32), F32}, w.F32, 4 * len(w.F32)
	}
	return weightKey{uintptr(unsafe.Pointer(unsafe.SliceData(w.Half))), len(w.Half), w.DType}, w.Half, 2 * len(w.Half)
}

// PrefetchWeights uploads those of ws that are not on the device yet, in
// their stored dtype, into one device block on a copy stream of its own, so
// that the copies overlap whatever the compute stream is running (the
// pipeline prefetches the VAE while the UNet samples). The first op that
// uses one of them makes the compute stream wait for the batch on the device;
// the host never waits. It may run in a goroutine beside ops on c; a weight
// that an op uploads meanwhile keeps that op's copy.
func (c *CUDA) PrefetchWeights(ws []*Tensor) error {
	c.pmu.Lock()
	defer c.pmu.Unlock()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cuda.SetDevice(c.device); err != nil {
		return err
	}
	type item struct {
		key  weightKey
		host any
		off  int
	}
	var items []item
	seen := map[weightKey]bool{}
	total := 0
	c.mu.Lock()
	for _, w := range ws {
		if w == nil || checkWeight("prefetch", w, false) != nil {
			continue
		}
		key, host, bytes := weightOf(w)
		if _, ok := c.weights[key]; ok || seen[key] || bytes == 0 {
			continue
		}
		seen[key] = true
		items = append(items, item{key, host, total})
		total += (bytes + 255) &^ 255 // 256-byte aligned, as cudaMalloc's blocks
	}
	c.mu.Unlock()
	if len(items) == 0 {
		return nil
	}
	if c.copy == nil {
		s, err := cuda.NewStream()
		if err != nil {
			return fmt.Errorf("tensor.CUDA: prefetch: %w", err)
		}
		c.copy = s
	}
	block, err := cuda.Malloc(total)
	if err != nil {
		return fmt.Errorf("tensor.CUDA: prefetch of %d MiB of weights: %w", total>>20, err)
	}
	ev, err := cuda.NewEvent()
	for _, it := range items {
		if err == nil {
			err = c.copy.Upload(block+cuda.Ptr(it.off), it.host)
		}
	}
	if err == nil {
		err = ev.Record(c.copy)
	}
	if err != nil {
		if ev != nil {
			c.copy.Sync()
			ev.Close()
		}
		cuda.Free(block)
		return fmt.Errorf("tensor.CUDA: prefetch: %w", err)
	}
	b := &prefetchBatch{block: block, ev: ev}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.batches = append(c.batches, b)
	for _, it := range items {
		if _, ok := c.weights[it.key]; ok {
			continue // an op uploaded it meanwhile; its slot in the block stays unused
		}
		c.weights[it.key] = devWeight{ptr: block + cuda.Ptr(it.off), host: it.host, batch: b}
		c.wbytes += int64(it.key.n * it.key.dt.Size())
	}
	return nil
}

// cudaStorage is an activation in device memory, a block of c's pool.
type cudaStorage struct {
	c     *CUDA
	ptr   cuda.Ptr
	freed bool // guarded by c.mu
}

func (s *cudaStorage) Owner() DeviceBackend { return s.c }

// Free hands the block back to the pool. Work queued on the stream that
// reads the block still runs first: the next owner's kernels queue after it.
func (s *cudaStorage) Free() {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	s.freeLocked()
}

func (s *cudaStorage) freeLocked() {
	if s.freed {
		return
	}
	s.freed = true
	s.c.live--
	s.c.release(s.ptr) // after Close the pool no longer knows ptr: a no-op
}

// Alloc returns an F32 tensor in device memory from the pool; its contents
// are unspecified.
func (c *CUDA) Alloc(shape ...int) (*Tensor, error) {
	unlock := c.begin()
	defer unlock()
	return c.alloc(shape)
}

func (c *CUDA) alloc(shape []int) (*Tensor, error) {
	p, err := c.scratch(4 * Numel(shape))
	if err != nil {
		return nil, &OpError{Op: "alloc", Shapes: [][]int{shape}, Err: ErrBackend, Detail: err.Error()}
	}
	s := &cudaStorage{c: c, ptr: p}
	c.live++
	// A tensor dropped without Release gives its block back when collected.
	runtime.SetFinalizer(s, (*cudaStorage).Free)
	return &Tensor{Shape: append([]int(nil), shape...), DType: F32, Dev: s}, nil
}

// ToDevice copies the F32 host tensor t into a new device tensor.
func (c *CUDA) ToDevice(t *Tensor) (*Tensor, error) {
	if t == nil || t.Dev != nil || t.DType != F32 || len(t.F32) != t.Numel() {
		return nil, &OpError{Op: "to_device", Err: ErrDType, Detail: "want an f32 host tensor"}
	}
	unlock := c.begin()
	defer unlock()
	d, err := c.alloc(t.Shape)
	if err != nil {
		return nil, err
	}
	if err := c.stream.Upload(d.Dev.(*cudaStorage).ptr, t.F32); err != nil {
		d.Dev.(*cudaStorage).freeLocked()
		return nil, &OpError{Op: "to_device", Shapes: [][]int{t.Shape}, Err: ErrBackend, Detail: err.Error()}
	}
	return d, nil
}

// ToHost waits for the work queued on c's stream, then copies the device
// tensor t into dst.
func (c *CUDA) ToHost(dst []float32, t *Tensor) error {
	unlock := c.begin()
	defer unlock()
	p, err := c.owned(t)
	if err == nil && len(dst) != t.Numel() {
		err = fmt.Errorf("%d values into a slice of %d", t.Numel(), len(dst))
	}
	if err == nil {
		err = c.stream.Download(dst, p)
	}
	if err != nil {
		return &OpError{Op: "to_host", Shapes: [][]int{t.Shape}, Err: ErrBackend, Detail: err.Error()}
	}
	return nil
}

// TrimPool frees the idle blocks of the activation pool (the pipeline calls
// it between the UNet and VAE phases, whose block sizes differ) and returns
// their bytes. Freeing waits for the device.
func (c *CUDA) TrimPool() (int64, error) {
	unlock := c.begin()
	defer unlock()
	var n int64
	var first error
	for sc, l := range c.free {
		for _, p := range l {
			if err := cuda.Free(p); err != nil && first == nil {
				first = err
			}
			delete(c.class, p)
			n += int64(sc)
			c.poolBytes -= int64(sc)
		}
		delete(c.free, sc)
	}
	return n, first
}

// MemoryStats is where a CUDA backend's device memory goes.
type MemoryStats struct {
	Weights   int64 // cached weights
	Pool      int64 // the activation and scratch pool, idle blocks included
	PeakPool  int64 // the most Pool has held
	DeviceUse int64 // in use on the whole device (cudaMemGetInfo: total - free), any process
	Total     int64 // the device's memory
}

// Memory reports c's device memory use.
func (c *CUDA) Memory() (MemoryStats, error) {
	unlock := c.begin()
	defer unlock()
	free, total, err := cuda.MemInfo()
	return MemoryStats{Weights: c.wbytes, Pool: c.poolBytes, PeakPool: c.peakPool, DeviceUse: total - free,
		Total: total}, err
}

// LiveTensors is the number of device tensors allocated and not yet freed.
func (c *CUDA) LiveTensors() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.live
}

// owned returns the memory of the device tensor t if c owns it and it has
// not been freed; c.mu is held.
func (c *CUDA) owned(t *Tensor) (cuda.Ptr, error) {
	s, ok := t.Dev.(*cudaStorage)
	switch {
	case !ok || s.c != c:
		return 0, fmt.Errorf("%w: tensor %s lives in the memory of %s, not %s", ErrBackend,
			ShapeString(t.Shape), t.Dev.Owner().Name(), c.name)
	case s.freed:
		return 0, fmt.Errorf("%w: device tensor %s used after its release", ErrBackend, ShapeString(t.Shape))
	case t.DType != F32:
		return 0, fmt.Errorf("%w: device tensors are f32", ErrDType)
	}
	return s.ptr, nil
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
	c.pmu.Lock() // no prefetch in flight
	defer c.pmu.Unlock()
	unlock := c.begin()
	defer unlock()
	var first error
	keep := func(err error) {
		if err != nil && first == nil {
			first = err
		}
	}
	for k, w := range c.weights {
		if w.batch == nil {
			keep(cuda.Free(w.ptr))
		}
		delete(c.weights, k)
	}
	for _, b := range c.batches {
		keep(cuda.Free(b.block)) // cudaFree waits for the copies into it
		keep(b.ev.Close())
	}
	c.batches = nil
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
	c.class, c.free, c.poolBytes = map[cuda.Ptr]int{}, map[int][]cuda.Ptr{}, 0
	if e := c.blas.Close(); e != nil && err == nil {
		err = e
	}
	if e := c.stream.Close(); e != nil && err == nil {
		err = e
	}
	if c.copy != nil {
		if e := c.copy.Close(); e != nil && err == nil {
			err = e
		}
		c.copy = nil
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
	c.poolBytes += int64(sc)
	c.peakPool = max(c.peakPool, c.poolBytes)
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

// call collects the scratch buffers of one op so they can be released
// together, and the host destinations to fill when it has run.
type call struct {
	c    *CUDA
	bufs []cuda.Ptr
	outs []pendingOut
	err  error
}

type pendingOut struct {
	dst []float32
	src cuda.Ptr
}

// in returns the device address of the activation t: its own memory for a
// device tensor of c, else a scratch copy uploaded for this call.
func (k *call) in(t *Tensor) cuda.Ptr {
	if t.Dev != nil {
		return k.own(t)
	}
	return k.upload(t.F32)
}

// out returns where the op writes the activation t: its own memory for a
// device tensor of c, else a scratch buffer that done copies into t.F32.
func (k *call) out(t *Tensor) cuda.Ptr {
	if t.Dev != nil {
		return k.own(t)
	}
	p := k.alloc(4 * len(t.F32))
	if k.err == nil {
		k.outs = append(k.outs, pendingOut{t.F32, p})
	}
	return p
}

// inPlace returns the addresses of x and y for an op that may run in place:
// with both on the host, the upload of x doubles as y's scratch buffer.
func (k *call) inPlace(x, y *Tensor) (xd, yd cuda.Ptr) {
	xd = k.in(x)
	if x.Dev != nil || y.Dev != nil {
		return xd, k.out(y)
	}
	if k.err == nil {
		k.outs = append(k.outs, pendingOut{y.F32, xd})
	}
	return xd, xd
}

// own returns the memory of the device tensor t, which c must own.
func (k *call) own(t *Tensor) cuda.Ptr {
	if k.err != nil {
		return 0
	}
	p, err := k.c.owned(t)
	if err != nil {
		k.err = err
	}
	return p
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
	key, host, bytes := weightOf(w)
	dt := cuda.DType(w.DType)
	if d, ok := k.c.weights[key]; ok {
		if b := d.batch; b != nil && !b.waited {
			// A prefetched weight: the compute stream waits (on the device)
			// for the copy stream's uploads of its batch.
			b.waited = true
			if err := k.c.stream.Wait(b.ev); err != nil {
				k.err = err
			}
		}
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

// done copies host destinations back, releases the call's buffers and
// wraps a failure as an *OpError.
func (k *call) done(op string, w *Tensor, ts ...*Tensor) error {
	for _, o := range k.outs {
		k.download(o.dst, o.src)
	}
	k.c.release(k.bufs...)
	if k.err == nil {
		return nil
	}
	kind := ErrBackend
	var ce *cuda.Error
	switch {
	case errors.As(k.err, &ce) && ce.Status == cuda.StatusInvalid:
		kind = ErrShape
	case errors.Is(k.err, ErrDType):
		kind = ErrDType
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
	xd := k.in(x)
	yd := k.out(y)
	var xs cuda.Ptr
	if wdt != cuda.F32 {
		xs = k.alloc(2 * m * kk)
	}
	if k.err == nil {
		k.err = c.blas.Linear(c.stream, wdt, yd, xd, wd, bd, bdt, xs, m, n, kk)
	}
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
	ad, bd := k.in(a), k.in(b)
	yd := k.out(y)
	if k.err == nil {
		k.err = c.blas.MatMul(c.stream, yd, ad, bd, m, kk, n)
	}
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
	xd := k.in(x)
	yd := k.out(y)
	sh := cuda.ConvShape{B: x.Shape[0], C: x.Shape[1], H: x.Shape[2], W: x.Shape[3], O: w.Shape[0],
		KH: w.Shape[2], KW: w.Shape[3], Stride: p.Stride,
		PadTop: p.PadTop, PadLeft: p.PadLeft, PadBottom: p.PadBottom, PadRight: p.PadRight}
	if k.err == nil {
		k.err = c.stream.Conv2D(wdt, yd, xd, wd, bd, bdt, sh)
	}
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
	xd, yd := k.inPlace(x, y)
	if k.err == nil {
		k.err = c.stream.GroupNorm(yd, xd, gd, gdt, bd, bdt, bs, ch, x.Numel()/(bs*ch), groups, eps, silu)
	}
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
	xd, yd := k.inPlace(x, y)
	if k.err == nil {
		k.err = c.stream.LayerNorm(yd, xd, gd, gdt, bd, bdt, x.Numel()/ch, ch, eps)
	}
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
	qd, kd, vd := kc.in(q), kc.in(k), kc.in(v)
	yd := kc.out(y)
	dt := c.attn
	if d > cuda.AttentionMaxD() {
		dt = F32
	}
	if dt == F32 {
		if kc.err == nil {
			kc.err = c.stream.Attention(cuda.F32, yd, qd, kd, vd, bs, lq, lk, heads, d, causal)
		}
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
		kc.err = c.stream.Cast(yd, yh, nq, hdt, cuda.F32)
	}
	return kc.done("attention", nil, q, k, v)
}

// elementwise runs f on the device addresses of the inputs and of y, which
// holds ny elements.
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
		ds[i] = k.in(t)
	}
	yd := k.out(y)
	if k.err == nil {
		k.err = f(yd, ds)
	}
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
		return c.stream.Upsample2x(yd, in[0], x.Shape[0]*x.Shape[1], x.Shape[2], x.Shape[3], y.Shape[2], y.Shape[3])
	}, x)
}

var _ DeviceBackend = (*CUDA)(nil)
