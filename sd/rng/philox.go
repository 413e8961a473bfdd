package rng

import (
	"math"
	"math/bits"
)

// Philox4x32-10 constants (Salmon et al., "Parallel random numbers: as easy as
// 1, 2, 3", SC 2011): the two round multipliers and the two key increments
// (the golden ratio and sqrt(3)-1 as 32-bit fractions).
const (
	philoxM0 = 0xD2511F53
	philoxM1 = 0xCD9E8D57
	philoxW0 = 0x9E3779B9
	philoxW1 = 0xBB67AE85
)

// philox4x32 runs the ten Philox4x32 rounds on counter c with key k and returns
// the four output words.
func philox4x32(c [4]uint32, k [2]uint32) [4]uint32 {
	for r := 0; r < 10; r++ {
		if r > 0 {
			k[0] += philoxW0
			k[1] += philoxW1
		}
		hi0, lo0 := bits.Mul32(philoxM0, c[0])
		hi1, lo1 := bits.Mul32(philoxM1, c[2])
		c = [4]uint32{hi1 ^ c[1] ^ k[0], lo1, hi0 ^ c[3] ^ k[1], lo0}
	}
	return c
}

// curand's Box-Muller constants as float32: 2^-32 and 2^-32 * 2pi, both as
// curand_normal.h rounds them.
const (
	twoPow32Inv    float32 = 2.3283064e-10
	twoPow32Inv2Pi float32 = 2.3283064e-10 * 6.2831855
)

// Philox reproduces torch.randn(..., device="cuda") for float32 tensors.
//
// PyTorch's CUDA normal kernel gives thread i the curand Philox state
// curand_init(seed, subsequence=i, offset=o), that is the 128-bit counter
// (o/4 as 64 bits, i as 64 bits) and the 64-bit key seed, and element i is the
// first value of curand_normal4: sqrt(-2 ln u) * sin(v) with u and v from the
// first two output words. After each call the generator's offset grows by 4
// (one counter step), so call number c (from 0) uses counter words
// (c, 0, i, 0).
//
// Reproduced: every call whose element count n fits in one thread per element,
// which holds when n <= 256 * (number of resident 256-thread blocks of the
// GPU), e.g. up to 125952 elements on an 82-SM RTX 3090 and beyond any SD
// latent (SDXL 1024x1024 is 65536) on current GPUs. Larger calls make PyTorch
// loop inside each thread with a GPU-dependent stride; not reproduced.
// Half-precision and float64 randn use other paths; not reproduced.
//
// Box-Muller: a GPU evaluates it in float32 with the fast __sincosf
// intrinsic, whose absolute error is about 2^-21; this implementation uses
// exact float64 sine (see curandBoxMullerX), so values can differ from a
// particular GPU's by about 1e-6 absolute.
type Philox struct {
	seed   uint64
	offset uint64 // counter steps used so far (PyTorch's offset / 4)
}

// NewPhilox returns the generator torch.Generator("cuda").manual_seed(seed)
// would be.
func NewPhilox(seed uint64) *Philox { return &Philox{seed: seed} }

// Randn returns the next call's n samples.
func (p *Philox) Randn(n int) []float32 {
	if n <= 0 {
		return []float32{}
	}
	out := make([]float32, n)
	key := [2]uint32{uint32(p.seed), uint32(p.seed >> 32)}
	for i := range out {
		c := [4]uint32{uint32(p.offset), uint32(p.offset >> 32), uint32(i), uint32(uint64(i) >> 32)}
		w := philox4x32(c, key)
		out[i] = curandBoxMullerX(w[0], w[1])
	}
	p.offset++
	return out
}

// curandBoxMullerX is the first (sine) output of curand's Box-Muller transform
// of two 32-bit words: u = x 2^-32 + 2^-33 in (0, 1] and v = y 2pi 2^-32 + pi 2^-32
// in (0, 2pi], both in float32 as curand computes them, so that neither is 0.
// The radius sqrt(-2 ln u) is rounded to float32; the sine and the product are
// taken in float64 and rounded once. This arrangement reproduces the reference
// noise of gosd's golden run bit for bit (3072 of 3072 values).
func curandBoxMullerX(x, y uint32) float32 {
	u := float32(float32(x)*twoPow32Inv) + twoPow32Inv/2
	v := float32(float32(y)*twoPow32Inv2Pi) + twoPow32Inv2Pi/2
	s := float32(math.Sqrt(-2 * math.Log(float64(u))))
	return float32(float64(s) * math.Sin(float64(v)))
}
