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
// PyTorch's CUDA normal kernel runs T threads (256 per block, one block per
// 256 elements but at most as many blocks as the GPU keeps resident). Thread
// i gets the curand Philox state curand_init(seed, subsequence=i, offset=o):
// the 128-bit counter (o/4 as 64 bits, i as 64 bits) and the 64-bit key seed.
// Each round of its loop draws curand_normal4, four normals from one counter
// (Box-Muller on output words 0,1 and 2,3, sine first), and writes them to
// elements i, i+T, i+2T, i+3T; the next round steps the counter and writes 4T
// further on. After the call the generator's offset o grows by 4 per round.
//
// When T >= n (one thread per element) element e is the first normal of
// counter (c, 0, e, 0) for call c; this holds for every SD latent on current
// GPUs when the resident-block limit is not reached, and is the default. A GPU
// with fewer resident threads than elements (e.g. SDXL's 65536 latent values on
// a 28-SM RTX 3060, which keeps 28*6 blocks = 43008 threads) takes the looping
// layout; NewPhiloxThreads reproduces it given the GPU's limit.
//
// Not reproduced: half-precision and float64 randn, which use other paths.
//
// Box-Muller: a GPU evaluates it in float32 with the fast __sincosf
// intrinsic, whose absolute error is about 2^-21; this implementation uses
// exact float64 sine and cosine (see curandBoxMuller), so values can differ
// from a particular GPU's by about 1e-6 absolute.
type Philox struct {
	seed       uint64
	offset     uint64 // counter steps used so far (PyTorch's offset / 4)
	maxThreads int    // resident-thread limit T_max; 0 for none
}

// NewPhilox returns the generator torch.Generator("cuda").manual_seed(seed)
// would be, on a GPU that runs one thread per element.
func NewPhilox(seed uint64) *Philox { return &Philox{seed: seed} }

// NewPhiloxThreads is NewPhilox for a GPU that keeps at most maxThreads
// threads of PyTorch's 256-thread blocks resident:
// multiProcessorCount * (maxThreadsPerMultiProcessor / 256) * 256, from
// torch.cuda.get_device_properties. maxThreads <= 0 means no limit.
func NewPhiloxThreads(seed uint64, maxThreads int) *Philox {
	if maxThreads > 0 && maxThreads < 256 {
		maxThreads = 256
	}
	return &Philox{seed: seed, maxThreads: maxThreads / 256 * 256}
}

// Randn returns the next call's n samples.
func (p *Philox) Randn(n int) []float32 {
	if n <= 0 {
		return []float32{}
	}
	threads := (n + 255) / 256 * 256
	if p.maxThreads > 0 && threads > p.maxThreads {
		threads = p.maxThreads
	}
	out := make([]float32, n)
	key := [2]uint32{uint32(p.seed), uint32(p.seed >> 32)}
	for i := 0; i < threads && i < n; i++ {
		for round := uint64(0); ; round++ {
			e := i + int(round)*4*threads
			if e >= n {
				break
			}
			c := p.offset + round
			w := philox4x32([4]uint32{uint32(c), uint32(c >> 32), uint32(i), uint32(uint64(i) >> 32)}, key)
			n4 := [4]float32{}
			n4[0], n4[1] = curandBoxMuller(w[0], w[1])
			n4[2], n4[3] = curandBoxMuller(w[2], w[3])
			for k := 0; k < 4 && e+k*threads < n; k++ {
				out[e+k*threads] = n4[k]
			}
		}
	}
	p.offset += uint64((n-1)/(4*threads) + 1)
	return out
}

// curandBoxMuller is curand's Box-Muller transform of two 32-bit words, sine
// output first: u = x 2^-32 + 2^-33 in (0, 1] and v = y 2pi 2^-32 + pi 2^-32
// in (0, 2pi], both in float32 as curand computes them, so that neither is 0.
// The radius sqrt(-2 ln u) is rounded to float32; the sine and the product are
// taken in float64 and rounded once. This arrangement reproduces the reference
// noise of gosd's golden run bit for bit (3072 of 3072 sine values); the
// cosine, used only by the looping layout, follows the same arrangement
// unverified.
func curandBoxMuller(x, y uint32) (float32, float32) {
	u := float32(float32(x)*twoPow32Inv) + twoPow32Inv/2
	v := float32(float32(y)*twoPow32Inv2Pi) + twoPow32Inv2Pi/2
	s := float64(float32(math.Sqrt(-2 * math.Log(float64(u)))))
	return float32(s * math.Sin(float64(v))), float32(s * math.Cos(float64(v)))
}
