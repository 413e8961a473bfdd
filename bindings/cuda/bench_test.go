//go:build cuda

package cuda_test

import (
	"math/rand/v2"
	"testing"

	"github.com/gosd/gosd/bindings/cuda"
)

// timeKernel runs f b.N times between two events and reports the kernel-only
// throughput in TFLOP/s for flops per call.
func timeKernel(b *testing.B, s *cuda.Stream, flops float64, f func() error) {
	b.Helper()
	if err := f(); err != nil { // warm-up, and the launch check
		b.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		b.Fatal(err)
	}
	start, err := cuda.NewEvent()
	if err != nil {
		b.Fatal(err)
	}
	defer start.Close()
	end, err := cuda.NewEvent()
	if err != nil {
		b.Fatal(err)
	}
	defer end.Close()
	b.ResetTimer()
	if err := start.Record(s); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		if err := f(); err != nil {
			b.Fatal(err)
		}
	}
	if err := end.Record(s); err != nil {
		b.Fatal(err)
	}
	ms, err := cuda.Elapsed(start, end)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	sec := float64(ms) / 1e3 / float64(b.N)
	b.ReportMetric(flops/sec/1e12, "TFLOP/s")
	b.ReportMetric(sec*1e3, "ms/op")
}

// BenchmarkAttentionF16 is SD 1.5's largest self-attention at 512x512: 4096
// tokens, 8 heads of D=40, batch 2 (classifier-free guidance).
// FLOPs: 4*B*H*Lq*Lk*D (two GEMMs of 2*Lq*Lk*D each).
func BenchmarkAttentionF16(b *testing.B) {
	for _, c := range []struct {
		name              string
		bs, lq, lk, hs, d int
	}{
		{"L4096_D40", 2, 4096, 4096, 8, 40},
		{"L4096x77_D40", 2, 4096, 77, 8, 40},
		{"L1024_D80", 2, 1024, 1024, 8, 80},
		{"L16384_D64", 1, 16384, 16384, 10, 64},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := gpu(b)
			r := rand.New(rand.NewPCG(1, 1))
			nq, nk := c.bs*c.lq*c.hs*c.d, c.bs*c.lk*c.hs*c.d
			h := func(n int) cuda.Ptr {
				x := make([]uint16, n)
				for i := range x {
					x[i] = uint16(0x3000 + r.IntN(0x800)) // f16 values in [0.125, 0.25)
				}
				return upload(b, s, x, n, 2)
			}
			q, k, v, y := h(nq), h(nk), h(nk), h(nq)
			flops := 4 * float64(c.bs) * float64(c.hs) * float64(c.lq) * float64(c.lk) * float64(c.d)
			timeKernel(b, s, flops, func() error {
				return s.Attention(cuda.F16, y, q, k, v, c.bs, c.lq, c.lk, c.hs, c.d, false)
			})
		})
	}
}

// BenchmarkConv2DF16 is the UNet's most common conv: 3x3, 320->320 channels
// on 64x64 latents, batch 2. FLOPs: 2*B*O*Ho*Wo*C*kH*kW.
func BenchmarkConv2DF16(b *testing.B) {
	for _, c := range []struct {
		name string
		sh   cuda.ConvShape
	}{
		{"3x3_320_64x64", cuda.ConvShape{B: 2, C: 320, H: 64, W: 64, O: 320, KH: 3, KW: 3, Stride: 1,
			PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}},
		{"3x3_1280_8x8", cuda.ConvShape{B: 2, C: 1280, H: 8, W: 8, O: 1280, KH: 3, KW: 3, Stride: 1,
			PadTop: 1, PadLeft: 1, PadBottom: 1, PadRight: 1}},
		{"1x1_640_32x32", cuda.ConvShape{B: 2, C: 640, H: 32, W: 32, O: 640, KH: 1, KW: 1, Stride: 1}},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := gpu(b)
			r := rand.New(rand.NewPCG(2, 2))
			sh := c.sh
			ho := (sh.H+sh.PadTop+sh.PadBottom-sh.KH)/sh.Stride + 1
			wo := (sh.W+sh.PadLeft+sh.PadRight-sh.KW)/sh.Stride + 1
			x := upload(b, s, randF32(r, sh.B*sh.C*sh.H*sh.W, 1), sh.B*sh.C*sh.H*sh.W, 4)
			wh := make([]uint16, sh.O*sh.C*sh.KH*sh.KW)
			for i := range wh {
				wh[i] = uint16(0x2000 + r.IntN(0x800))
			}
			w := upload(b, s, wh, len(wh), 2)
			y, err := cuda.Malloc(sh.B * sh.O * ho * wo * 4)
			if err != nil {
				b.Fatal(err)
			}
			defer cuda.Free(y)
			flops := 2 * float64(sh.B*sh.O*ho*wo) * float64(sh.C*sh.KH*sh.KW)
			timeKernel(b, s, flops, func() error {
				return s.Conv2D(cuda.F16, y, x, w, 0, cuda.F16, sh)
			})
		})
	}
}

// BenchmarkLinearF16 calibrates the kernels above against cuBLASLt on the
// same GPU: an SD feed-forward projection and a square GEMM near peak.
// FLOPs 2*M*N*K; the f32->f16 rounding of x is included.
func BenchmarkLinearF16(b *testing.B) {
	for _, c := range []struct {
		name    string
		m, n, k int
	}{
		{"M8192_N2560_K320", 8192, 2560, 320},
		{"M4096_N4096_K4096", 4096, 4096, 4096},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := gpu(b)
			bl, err := cuda.NewBlas(32 << 20)
			if err != nil {
				b.Fatal(err)
			}
			defer bl.Close()
			r := rand.New(rand.NewPCG(3, 3))
			x := upload(b, s, randF32(r, c.m*c.k, 1), c.m*c.k, 4)
			wh := make([]uint16, c.n*c.k)
			for i := range wh {
				wh[i] = uint16(0x2000 + r.IntN(0x800))
			}
			w := upload(b, s, wh, len(wh), 2)
			xs, err := cuda.Malloc(2 * c.m * c.k)
			if err != nil {
				b.Fatal(err)
			}
			defer cuda.Free(xs)
			y, err := cuda.Malloc(4 * c.m * c.n)
			if err != nil {
				b.Fatal(err)
			}
			defer cuda.Free(y)
			flops := 2 * float64(c.m) * float64(c.n) * float64(c.k)
			timeKernel(b, s, flops, func() error {
				return bl.Linear(s, cuda.F16, y, x, w, 0, cuda.F16, xs, c.m, c.n, c.k)
			})
		})
	}
}
