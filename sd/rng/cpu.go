package rng

import "math"

// CPU reproduces torch.randn on the CPU for contiguous float32 tensors
// (checked against PyTorch 1.13, see testdata/README.md).
//
// PyTorch draws from mt19937 and takes two paths depending on the element
// count n of one call:
//
//   - n >= 16 ("normal_fill"): n uniforms u = (w & 0xFFFFFF) / 2^24 from
//     single 32-bit words, then Box-Muller on each chunk of 16, pairing element
//     j with j+8 (j < 8): r = sqrt(-2 ln(1-u[j])), t = 2pi u[j+8],
//     out[j] = r cos t, out[j+8] = r sin t. If n is not a multiple of 16, 16
//     fresh uniforms overwrite the last 16 elements, which are transformed as one
//     more chunk (so they overlap the previous chunk's tail).
//   - n < 16: one at a time, in float64: u1, u2 = (w64 & (2^53-1)) / 2^53 from
//     64-bit words made of two 32-bit outputs (first is the high half);
//     r = sqrt(-2 ln(1-u2)), t = 2pi u1; the value is r cos t and r sin t is
//     cached in the generator for the next scalar-path sample (the cache
//     survives n >= 16 calls and is cleared by manual_seed).
//
// The n >= 16 transform exists in two builds: plain C++ in float32 with libm
// (used on CPUs without AVX2, on ARM, and where ATEN_CPU_CAPABILITY=default),
// and an AVX2 version with polynomial log/sin/cos (avx_mathfun) picked on x86
// CPUs with AVX2. Plain selects the former; the default (AVX2) selects the
// latter, see NewCPUVariant.
//
// Not reproduced: randn into non-contiguous, half-precision or float64
// tensors, which PyTorch fills element by element through other transforms.
type CPU struct {
	mt      *mt19937
	plain   bool
	cached  float64
	hasNext bool
}

// NewCPU returns the generator torch.manual_seed(seed) would give on an x86
// CPU with AVX2 (the common case for ComfyUI on a PC).
func NewCPU(seed uint64) *CPU { return &CPU{mt: newMT19937(seed)} }

// NewCPUVariant is NewCPU with the choice of PyTorch's n >= 16 transform:
// plain=true for its portable C++ build.
func NewCPUVariant(seed uint64, plain bool) *CPU {
	return &CPU{mt: newMT19937(seed), plain: plain}
}

// Randn returns the next call's n samples.
func (g *CPU) Randn(n int) []float32 {
	if n <= 0 {
		return []float32{}
	}
	out := make([]float32, n)
	if n < 16 {
		for i := range out {
			out[i] = float32(g.normal64())
		}
		return out
	}
	for i := range out {
		out[i] = g.uniform24()
	}
	for i := 0; i+16 <= n; i += 16 {
		g.fill16(out[i : i+16])
	}
	if n%16 != 0 {
		tail := out[n-16:]
		for i := range tail {
			tail[i] = g.uniform24()
		}
		g.fill16(tail)
	}
	return out
}

func (g *CPU) fill16(d []float32) {
	if g.plain {
		normalFill16(d)
	} else {
		normalFill16AVX2(d)
	}
}

// uniform24 is at::uniform_real_distribution<float>(0, 1): 24 random bits.
func (g *CPU) uniform24() float32 {
	return float32(g.mt.next()&0xFFFFFF) / (1 << 24)
}

// uniform53 is at::uniform_real_distribution<double>(0, 1): 53 random bits of
// a 64-bit word whose high half is drawn first.
func (g *CPU) uniform53() float64 {
	hi := uint64(g.mt.next())
	lo := uint64(g.mt.next())
	return float64((hi<<32|lo)&(1<<53-1)) / (1 << 53)
}

// normal64 is at::normal_distribution<double>(0, 1) with its one-value cache.
func (g *CPU) normal64() float64 {
	if g.hasNext {
		g.hasNext = false
		return g.cached
	}
	u1 := g.uniform53()
	u2 := g.uniform53()
	r := math.Sqrt(-2 * math.Log(1-u2))
	t := 2 * math.Pi * u1
	g.cached, g.hasNext = r*math.Sin(t), true
	return r * math.Cos(t)
}

// normalFill16 is PyTorch's portable normal_fill_16 for float32: libm logf,
// sqrtf, cosf and sinf, with theta rounded to float32 from a float64 product.
// Go has no float32 libm; the float64 functions rounded once give the
// correctly rounded result, which glibc's float functions also return except
// in rare cases (then one ulp apart).
func normalFill16(d []float32) {
	for j := 0; j < 8; j++ {
		u1 := 1 - d[j]
		u2 := d[j+8]
		lg := float32(math.Log(float64(u1)))
		r := float32(math.Sqrt(float64(-2 * lg)))
		t := float32(2 * math.Pi * float64(u2))
		d[j] = r * float32(math.Cos(float64(t)))
		d[j+8] = r * float32(math.Sin(float64(t)))
	}
}
