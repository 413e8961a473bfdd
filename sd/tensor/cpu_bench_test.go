package tensor

import (
	"fmt"
	"math/rand"
	"syscall"
	"testing"

	"github.com/gosd/gosd/bindings/cpu"
)

// Benchmarks of the native CPU kernels on Stable Diffusion 1.5 shapes. Each
// reports GFLOP/s (2 flops per multiply-add; attention counts its two
// matrix products, 4·Lq·Lk·D per head). Run with
//
//	go test -run XXX -bench CPU -benchtime 3x ./sd/tensor
//
// GOSD_CPU=portable benchmarks the portable path.

// cpuSeconds returns the user+system CPU time of the process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// run times f b.N times and reports GFLOP/s by wall clock and "GFLOP/s-cpu":
// flops per CPU-second times the kernel thread count, i.e. the rate the
// threads would reach with their cores to themselves. The second is the
// fairer figure on a machine shared with other jobs (it still counts the
// time a thread spins waiting for the others).
func run(b *testing.B, flops float64, f func() error) {
	c0 := cpuSeconds()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	total := flops * float64(b.N)
	b.ReportMetric(total/b.Elapsed().Seconds()/1e9, "GFLOP/s")
	if cs := cpuSeconds() - c0; cs > 0 {
		b.ReportMetric(total/cs*float64(cpu.Threads())/1e9, "GFLOP/s-cpu")
	}
}

func BenchmarkCPULinear(b *testing.B) {
	be := NewCPU()
	rng := rand.New(rand.NewSource(1))
	for _, c := range []struct {
		m, k, n int
		dt      DType
	}{
		{4096, 320, 1280, F16}, {4096, 320, 1280, F32}, {1024, 1280, 5120, F16}, {77, 768, 3072, F16},
	} {
		x := randF32(rng, -1, 1, c.m, c.k)
		w := asDType(randF32(rng, -1, 1, c.n, c.k), c.dt)
		bias := asDType(randF32(rng, -1, 1, c.n), c.dt)
		y := New(c.m, c.n)
		b.Run(fmt.Sprintf("%dx%dx%d_%v", c.m, c.k, c.n, c.dt), func(b *testing.B) {
			run(b, 2*float64(c.m)*float64(c.n)*float64(c.k), func() error { return be.Linear(y, x, w, bias) })
		})
	}
}

func BenchmarkCPUConv2D(b *testing.B) {
	be := NewCPU()
	rng := rand.New(rand.NewSource(2))
	for _, c := range []struct {
		c, o, h, w, k, stride int
		dt                    DType
	}{
		{320, 320, 64, 64, 3, 1, F16}, {320, 320, 64, 64, 3, 1, F32}, {128, 128, 128, 128, 3, 1, F16},
		{640, 640, 32, 32, 3, 2, F16}, {320, 320, 64, 64, 1, 1, F16},
		{1280, 1280, 4, 3, 3, 1, F16}, {1280, 1280, 8, 6, 3, 1, F16}, // deepest UNet levels at 32x24
	} {
		p := Pad(c.stride, c.k/2)
		x := randF32(rng, -1, 1, 1, c.c, c.h, c.w)
		w := asDType(randF32(rng, -1, 1, c.o, c.c, c.k, c.k), c.dt)
		bias := asDType(randF32(rng, -1, 1, c.o), c.dt)
		ho, wo := p.OutSize(c.h, c.w, c.k, c.k)
		y := New(1, c.o, ho, wo)
		b.Run(fmt.Sprintf("%dx%dk%ds%d_%dto%d_%v", c.h, c.w, c.k, c.stride, c.c, c.o, c.dt), func(b *testing.B) {
			run(b, 2*float64(c.o*ho*wo)*float64(c.c*c.k*c.k), func() error { return be.Conv2D(y, x, w, bias, p) })
		})
	}
}

func BenchmarkCPUAttention(b *testing.B) {
	be := NewCPU()
	rng := rand.New(rand.NewSource(3))
	for _, c := range []struct {
		name             string
		lq, lk, heads, d int
		causal           bool
	}{
		{"self4096_h8_d40", 4096, 4096, 8, 40, false},
		{"cross4096x77_h8_d40", 4096, 77, 8, 40, false},
		{"self1024_h8_d80", 1024, 1024, 8, 80, false},
		{"clip77_h12_d64_causal", 77, 77, 12, 64, true},
		{"vae4096_h1_d512", 4096, 4096, 1, 512, false},
	} {
		q := randF32(rng, -1, 1, 1, c.lq, c.heads*c.d)
		k := randF32(rng, -1, 1, 1, c.lk, c.heads*c.d)
		v := randF32(rng, -1, 1, 1, c.lk, c.heads*c.d)
		y := New(1, c.lq, c.heads*c.d)
		b.Run(c.name, func(b *testing.B) {
			f := 4 * float64(c.lq) * float64(c.lk) * float64(c.d) * float64(c.heads)
			if c.causal {
				f /= 2
			}
			run(b, f, func() error { return be.Attention(y, q, k, v, c.heads, c.causal) })
		})
	}
}

func BenchmarkCPUGroupNorm(b *testing.B) {
	be := NewCPU()
	x := randF32(rand.New(rand.NewSource(4)), -1, 1, 1, 320, 64, 64)
	g, bt := New(320), New(320)
	b.SetBytes(int64(8 * x.Numel()))
	for i := 0; i < b.N; i++ {
		if err := be.GroupNorm(x, x, g, bt, 32, 1e-5, true); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCPUPeak measures the clock (a chain of dependent adds, one per
// cycle) and one thread's AVX-512 f32 FMA throughput, to put the GFLOP/s
// above in proportion.
func BenchmarkCPUPeak(b *testing.B) {
	var ghz, gf float64
	for i := 0; i < b.N; i++ {
		var err error
		if ghz, gf, err = cpu.Probe(0.4); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(ghz, "GHz")
	b.ReportMetric(gf, "FMA-GFLOP/s/thread")
	b.ReportMetric(float64(cpu.Threads()), "threads")
}
