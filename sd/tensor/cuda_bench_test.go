//go:build cuda

package tensor

import (
	"math/rand/v2"
	"testing"
)

// Backend-level CUDA benchmarks: each op includes the host round trip of its
// activations (upload, kernel, download), so comparing these numbers with
// the kernel-only ones of bindings/cuda (BenchmarkAttentionF16,
// BenchmarkConv2DF16) shows what device-resident activations would save.

// BenchmarkCUDAAttention4096D40: SD 1.5 self-attention at 512x512, batch 2
// (guidance), 8 heads of D=40. FLOPs 4*B*H*L*L*D.
func BenchmarkCUDAAttention4096D40(b *testing.B) {
	c := cudaOrSkip(b)
	r := rand.New(rand.NewPCG(1, 1))
	const bs, l, heads, d = 2, 4096, 8, 40
	q, k, v := cuRand(r, 1, bs, l, heads*d), cuRand(r, 1, bs, l, heads*d), cuRand(r, 1, bs, l, heads*d)
	y := New(bs, l, heads*d)
	flops := 4.0 * bs * heads * l * l * d
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Attention(y, q, k, v, heads, false); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e12, "TFLOP/s")
}

// BenchmarkCUDAConv3x3_320_64x64: the UNet's 3x3 conv, 320->320 channels on
// 64x64 latents, batch 2, f16 weights. FLOPs 2*B*O*H*W*C*9.
func BenchmarkCUDAConv3x3_320_64x64(b *testing.B) {
	c := cudaOrSkip(b)
	r := rand.New(rand.NewPCG(2, 2))
	x := cuRand(r, 1, 2, 320, 64, 64)
	w := cuAs(cuRand(r, 0.02, 320, 320, 3, 3), F16)
	bias := cuAs(cuRand(r, 1, 320), F16)
	y := New(2, 320, 64, 64)
	flops := 2.0 * 2 * 320 * 64 * 64 * 320 * 9
	if err := c.Conv2D(y, x, w, bias, Pad(1, 1)); err != nil { // uploads the weight once
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := c.Conv2D(y, x, w, bias, Pad(1, 1)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(flops*float64(b.N)/b.Elapsed().Seconds()/1e12, "TFLOP/s")
}
