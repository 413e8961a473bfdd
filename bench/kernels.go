// Package bench measures gosd: kernel throughput on Stable Diffusion shapes
// (GFLOP/s and share of the core's peak) and end-to-end generation speed
// (seconds per sampling step, text-encoder and VAE time, peak memory).
package bench

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/gosd/gosd/sd/tensor"
)

// KernelCase is one kernel call on a fixed shape.
type KernelCase struct {
	Op    string  // "linear", "conv3x3", "attention"
	Shape string  // human-readable shape
	FLOP  float64 // floating-point operations of one call (a multiply-add is 2)
	run   func(be tensor.Backend) error
}

// KernelResult is the measured speed of one KernelCase.
type KernelResult struct {
	Op        string  `json:"op"`
	Shape     string  `json:"shape"`
	DType     string  `json:"weight_dtype"`
	Precision string  `json:"precision"` // "f32" or "bf16" products
	Impl      string  `json:"impl"`      // "gosd" or "onednn"
	Seconds   float64 `json:"seconds"`   // best of the timed calls
	GFLOPS    float64 `json:"gflops"`
	PeakShare float64 `json:"peak_share"` // GFLOPS / peak of the cores used
	// GFLOPSCPU is the rate per CPU-second times the threads over all timed
	// calls: what the threads would reach with their cores to themselves
	// (on a shared machine the steadier figure; it still counts the time a
	// thread spins waiting for the others).
	GFLOPSCPU float64 `json:"gflops_cpu"`
}

func randT(r *rand.Rand, shape ...int) *tensor.Tensor {
	t := tensor.New(shape...)
	for i := range t.F32 {
		t.F32[i] = float32(r.NormFloat64())
	}
	return t
}

// weight returns a random weight of the given dtype.
func weight(r *rand.Rand, dt tensor.DType, shape ...int) *tensor.Tensor {
	t := randT(r, shape...)
	switch dt {
	case tensor.F16:
		h := make([]uint16, len(t.F32))
		for i, v := range t.F32 {
			h[i] = tensor.F32ToF16(v * 0.05)
		}
		return tensor.FromHalf(h, dt, shape...)
	case tensor.BF16:
		h := make([]uint16, len(t.F32))
		for i, v := range t.F32 {
			h[i] = tensor.F32ToBF16(v * 0.05)
		}
		return tensor.FromHalf(h, dt, shape...)
	}
	return t
}

// MatMulShapes are the large matrix products (M, K, N) measured next to
// oneDNN (bench/onednn.go, build tag onednn): the UNet's first-level
// projections for a CFG batch of two at 512x512 (8192 rows).
var MatMulShapes = [][3]int{{8192, 320, 2880}, {8192, 1280, 5120}, {8192, 640, 5760}}

// SD15LinearShapes are the UNet's Linear shapes (M, K, N) at 512x512 for
// one image: attention projections, GEGLU in-projection and feed-forward
// out-projection at level 0, GEGLU in-projection at level 1.
var SD15LinearShapes = [][3]int{{4096, 320, 320}, {4096, 320, 2560}, {4096, 1280, 320}, {1024, 640, 5120}}

// OneDNN, when the binary is built with the onednn tag, times oneDNN's
// matmul on the shapes (M, K, N) in precision "f32" or "bf16" (bf16 inputs,
// f32 output); nil otherwise.
var OneDNN func(shapes [][3]int, precision string, peakGFLOPS float64, minTime time.Duration) ([]KernelResult, error)

// SD15Kernels lists the heaviest kernel shapes of an SD 1.5 UNet step at
// 512x512 (latent 64x64, 4096 tokens at the first level), with weights of
// dtype dt.
func SD15Kernels(dt tensor.DType) []KernelCase {
	r := rand.New(rand.NewPCG(1, 2))
	var cases []KernelCase
	linear := func(m, k, n int) {
		x, w, b, y := randT(r, m, k), weight(r, dt, n, k), weight(r, dt, n), tensor.New(m, n)
		cases = append(cases, KernelCase{Op: "linear", Shape: fmt.Sprintf("%dx%dx%d", m, k, n),
			FLOP: 2 * float64(m) * float64(k) * float64(n),
			run:  func(be tensor.Backend) error { return be.Linear(y, x, w, b) }})
	}
	conv := func(c, o, h int) {
		x, w, b, y := randT(r, 1, c, h, h), weight(r, dt, o, c, 3, 3), weight(r, dt, o), tensor.New(1, o, h, h)
		cases = append(cases, KernelCase{Op: "conv3x3", Shape: fmt.Sprintf("%d->%d@%dx%d", c, o, h, h),
			FLOP: 2 * float64(o) * float64(c*9) * float64(h*h),
			run:  func(be tensor.Backend) error { return be.Conv2D(y, x, w, b, tensor.Pad(1, 1)) }})
	}
	attn := func(lq, lk, heads, d int) {
		q, k, v, y := randT(r, 1, lq, heads*d), randT(r, 1, lk, heads*d), randT(r, 1, lk, heads*d), tensor.New(1, lq, heads*d)
		cases = append(cases, KernelCase{Op: "attention", Shape: fmt.Sprintf("%dx%d h%d d%d", lq, lk, heads, d),
			FLOP: 4 * float64(lq) * float64(lk) * float64(heads*d),
			run:  func(be tensor.Backend) error { return be.Attention(y, q, k, v, heads, false) }})
	}
	for _, m := range MatMulShapes {
		linear(m[0], m[1], m[2])
	}
	for _, m := range SD15LinearShapes {
		linear(m[0], m[1], m[2])
	}
	conv(320, 320, 64)      // level-0 residual convs
	conv(640, 640, 32)      // level-1 residual convs
	conv(1280, 1280, 16)    // level-2 residual convs
	attn(4096, 4096, 8, 40) // level-0 self-attention
	attn(4096, 77, 8, 40)   // level-0 cross-attention
	attn(1024, 1024, 8, 80) // level-1 self-attention
	return cases
}

// RunKernels times each case on be: one warm-up call, then calls until
// minTime has passed (at least two); it reports the best call.
func RunKernels(be tensor.Backend, cases []KernelCase, dt tensor.DType, peakGFLOPS float64, minTime time.Duration) ([]KernelResult, error) {
	threads := 1
	if c, ok := be.(*tensor.CPU); ok {
		threads = c.Threads()
	}
	var out []KernelResult
	for _, c := range cases {
		if err := c.run(be); err != nil {
			return nil, fmt.Errorf("%s %s: %w", c.Op, c.Shape, err)
		}
		best := time.Duration(1<<63 - 1)
		start, c0, calls := time.Now(), CPUSeconds(), 0
		for n := 0; n < 2 || time.Since(start) < minTime; n++ {
			calls++
			t0 := time.Now()
			if err := c.run(be); err != nil {
				return nil, err
			}
			best = min(best, time.Since(t0))
		}
		g := c.FLOP / best.Seconds() / 1e9
		gc := 0.0
		if cs := CPUSeconds() - c0; cs > 0 {
			gc = c.FLOP * float64(calls) / cs * float64(threads) / 1e9
		}
		prec := "f32"
		if strings.HasSuffix(be.Name(), "-bf16") {
			prec = "bf16"
		}
		out = append(out, KernelResult{Op: c.Op, Shape: c.Shape, DType: dt.String(), Precision: prec, Impl: "gosd",
			Seconds: best.Seconds(), GFLOPS: g, PeakShare: g / peakGFLOPS, GFLOPSCPU: gc})
	}
	return out, nil
}
