package rng

import "math"

// This file reproduces, in scalar float32 Go, PyTorch's AVX2 normal_fill_16:
// Box-Muller on 8 lanes with the Cephes-derived single-precision log, sin and
// cos polynomials of avx_mathfun (J. Pommier's sse_mathfun ported to AVX,
// after S. Moshier's Cephes library). Every operation is rounded to float32
// as the vector instructions round it; mulAdd marks the multiply-adds that the
// compiler fused into one FMA instruction when building PyTorch with -mfma
// (GCC fuses a product into the add or subtract that is its only use). Go may
// itself fuse a plain x*y + z, so no such expression appears here unfused.

// mulAdd is a*b+c with one rounding (a fused multiply-add).
func mulAdd(a, b, c float32) float32 {
	return float32(math.FMA(float64(a), float64(b), float64(c)))
}

// Cephes logf coefficients: log(1+x) = x - x^2/2 + x^3 P(x) on
// [sqrt(1/2)-1, sqrt(2)-1], and ln 2 split as q2 + q1 for exact e*ln2.
const (
	logP0    float32 = 7.0376836292e-2
	logP1    float32 = -1.1514610310e-1
	logP2    float32 = 1.1676998740e-1
	logP3    float32 = -1.2420140846e-1
	logP4    float32 = 1.4249322787e-1
	logP5    float32 = -1.6668057665e-1
	logP6    float32 = 2.0000714765e-1
	logP7    float32 = -2.4999993993e-1
	logP8    float32 = 3.3333331174e-1
	logQ1    float32 = -2.12194440e-4
	logQ2    float32 = 0.693359375
	sqrtHalf float32 = 0.707106781186547524
)

// logAVX2 is avx_mathfun's log256_ps for one positive, normal lane.
func logAVX2(x float32) float32 {
	b := math.Float32bits(x)
	e := float32(int32(b>>23)-0x7f) + 1
	// Mantissa scaled into [0.5, 1).
	x = math.Float32frombits(b&^0x7F800000 | math.Float32bits(0.5))
	var tmp float32
	if x < sqrtHalf {
		tmp = x
		e--
	}
	x = (x - 1) + tmp
	z := x * x
	y := logP0
	for _, p := range []float32{logP1, logP2, logP3, logP4, logP5, logP6, logP7, logP8} {
		y = mulAdd(y, x, p)
	}
	y = y * x
	y = mulAdd(y, z, e*logQ1)
	y = mulAdd(-0.5, z, y)
	x = x + y
	return mulAdd(e, logQ2, x)
}

// Cephes sinf/cosf: x reduced modulo pi/4 with pi/4 split in three parts
// (dp1+dp2+dp3), then a degree-7 odd sine or degree-8 even cosine polynomial
// on [-pi/4, pi/4].
const (
	fourOverPi float32 = 1.27323954473516
	dp1        float32 = -0.78515625
	dp2        float32 = -2.4187564849853515625e-4
	dp3        float32 = -3.77489497744594108e-8
	sinC0      float32 = -1.9515295891e-4
	sinC1      float32 = 8.3321608736e-3
	sinC2      float32 = -1.6666654611e-1
	cosC0      float32 = 2.443315711809948e-5
	cosC1      float32 = -1.388731625493765e-3
	cosC2      float32 = 4.166664568298827e-2
)

// sincosAVX2 is avx_mathfun's sincos256_ps for one non-negative lane.
func sincosAVX2(x float32) (sin, cos float32) {
	j := (int32(x*fourOverPi) + 1) &^ 1 // octant, rounded up to even
	y := float32(j)
	sinNeg := j&4 != 0
	cosNeg := (j-2)&4 == 0
	usePolyCos := j&2 == 0 // then sin comes from the sine polynomial
	x = mulAdd(y, dp1, x)
	x = mulAdd(y, dp2, x)
	x = mulAdd(y, dp3, x)
	z := x * x
	c := mulAdd(cosC0, z, cosC1)
	c = mulAdd(c, z, cosC2)
	c = c * z
	c = mulAdd(c, z, -0.5*z)
	c = c + 1
	s := mulAdd(sinC0, z, sinC1)
	s = mulAdd(s, z, sinC2)
	s = s * z
	s = mulAdd(s, x, x)
	if usePolyCos {
		sin, cos = s, c
	} else {
		sin, cos = c, s
	}
	if sinNeg {
		sin = -sin
	}
	if cosNeg {
		cos = -cos
	}
	return sin, cos
}

// normalFill16AVX2 is PyTorch's normal_fill_16_AVX2 with mean 0 and std 1.
func normalFill16AVX2(d []float32) {
	const twoPi = float32(2 * math.Pi)
	for j := 0; j < 8; j++ {
		u1 := 1 - d[j]
		r := float32(math.Sqrt(float64(-2 * logAVX2(u1))))
		sin, cos := sincosAVX2(twoPi * d[j+8])
		d[j] = r * cos
		d[j+8] = r * sin
	}
}
