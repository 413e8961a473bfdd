package tensor

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"os"
	"os/exec"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// sentinel fills guard bands around destinations; a kernel never writes it.
var sentinel = math.Float32frombits(0x7fc0dead)

const guard = 67 // guard-band length on each side of a destination

// guarded returns a zero-length-padded F32 destination of the given shape whose
// slice sits between two guard bands of sentinel values, and a check function.
func guarded(t *testing.T, shape ...int) (*Tensor, func()) {
	t.Helper()
	n := Numel(shape)
	buf := make([]float32, n+2*guard)
	for i := range buf {
		buf[i] = sentinel
	}
	y := &Tensor{Shape: append([]int(nil), shape...), DType: F32, F32: buf[guard : guard+n : guard+n]}
	return y, func() {
		t.Helper()
		for i := 0; i < guard; i++ {
			if math.Float32bits(buf[i]) != math.Float32bits(sentinel) ||
				math.Float32bits(buf[guard+n+i]) != math.Float32bits(sentinel) {
				t.Fatalf("stray write in the guard band around a destination of shape %v", shape)
			}
		}
	}
}

func randF32(rng *rand.Rand, lo, hi float32, shape ...int) *Tensor {
	x := New(shape...)
	for i := range x.F32 {
		x.F32[i] = lo + (hi-lo)*rng.Float32()
	}
	return x
}

// asDType returns t (F32) converted to dt; the reference then sees the same rounded values.
func asDType(t *Tensor, dt DType) *Tensor {
	switch dt {
	case F16:
		h := make([]uint16, len(t.F32))
		for i, v := range t.F32 {
			h[i] = F32ToF16(v)
		}
		return FromHalf(h, F16, t.Shape...)
	case BF16:
		h := make([]uint16, len(t.F32))
		for i, v := range t.F32 {
			h[i] = F32ToBF16(v)
		}
		return FromHalf(h, BF16, t.Shape...)
	}
	return t
}

// closeTo checks |got-want| <= atol + rtol*|want| element-wise.
func closeTo(t *testing.T, name string, got, want []float32, atol, rtol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", name, len(got), len(want))
	}
	worst, wi := 0.0, -1
	for i := range got {
		g, w := float64(got[i]), float64(want[i])
		d := math.Abs(g - w)
		if math.IsNaN(g) != math.IsNaN(w) || d > atol+rtol*math.Abs(w) {
			t.Fatalf("%s: [%d] = %v, want %v (atol %g, rtol %g)", name, i, g, w, atol, rtol)
		}
		if d > worst {
			worst, wi = d, i
		}
	}
	_ = wi
}

// exact checks bit equality.
func exact(t *testing.T, name string, got, want []float32) {
	t.Helper()
	for i := range want {
		if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
			t.Fatalf("%s: [%d] = %v, want %v", name, i, got[i], want[i])
		}
	}
}

// kernelFamilies lists the families this CPU can run.
func kernelFamilies() []string {
	if CPUHasAVX512() {
		return []string{"portable", "avx512"}
	}
	return []string{"portable"}
}

// eachFamily runs f once per kernel family, then restores the default.
func eachFamily(t *testing.T, f func(t *testing.T, be *CPU)) {
	be := NewCPU()
	defer func() {
		if err := be.SetKernels("auto"); err != nil {
			t.Fatal(err)
		}
	}()
	for _, fam := range kernelFamilies() {
		if err := be.SetKernels(fam); err != nil {
			t.Fatal(err)
		}
		if be.Name() != "cpu/"+fam {
			t.Fatalf("Name() = %q after SetKernels(%q)", be.Name(), fam)
		}
		t.Run(fam, func(t *testing.T) { f(t, be) })
	}
}

var dtypes = []DType{F32, F16, BF16}

func TestCPULinear(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	ref := NewRef()
	cases := []struct {
		lead    []int
		n, k    int
		bias    bool
		atol    float64 // f32 sums of k products of values in [-1, 1]
		heavyOK bool
	}{
		{[]int{7}, 13, 29, true, 1e-5, false},
		{[]int{1}, 1, 1, false, 1e-6, false},
		{[]int{2, 3}, 33, 257, true, 5e-5, false},    // two depth blocks, edge tiles
		{[]int{25}, 70, 600, false, 1e-4, false},     // three depth blocks
		{[]int{2, 77}, 96, 64, true, 2e-5, false},    // CLIP-like rows
		{[]int{130}, 545, 40, true, 1e-5, false},     // several column blocks
		{[]int{4, 0}, 8, 8, true, 0, false},          // empty batch
		{[]int{3}, 5, 0, true, 0, false},             // K = 0: y = b
		{[]int{1, 256}, 320, 320, true, 5e-5, true},  // SD shapes
		{[]int{1, 96}, 1280, 320, false, 5e-5, true}, // SD shapes
	}
	for ci, c := range cases {
		for _, dt := range dtypes {
			x := randF32(rng, -1, 1, append(append([]int(nil), c.lead...), c.k)...)
			w := asDType(randF32(rng, -1, 1, c.n, c.k), dt)
			var b *Tensor
			if c.bias {
				b = asDType(randF32(rng, -1, 1, c.n), dt)
			}
			yshape := append(append([]int(nil), c.lead...), c.n)
			want := New(yshape...)
			if c.k == 0 { // Ref divides by K; y = b
				for i := range want.F32 {
					want.F32[i] = b.Float32s()[i%c.n]
				}
			} else if err := ref.Linear(want, x, w, b); err != nil {
				t.Fatal(err)
			}
			eachFamily(t, func(t *testing.T, be *CPU) {
				y, check := guarded(t, yshape...)
				if err := be.Linear(y, x, w, b); err != nil {
					t.Fatal(err)
				}
				check()
				closeTo(t, fmt.Sprintf("case %d %v", ci, dt), y.F32, want.F32, c.atol, 1e-5)
			})
		}
	}
}

// sgemm computes a·b with gonum's blas32.
func sgemm(a, b *Tensor) []float32 {
	m, k, n := a.Shape[0], a.Shape[1], b.Shape[1]
	if m == 0 || n == 0 || k == 0 {
		return make([]float32, m*n)
	}
	c := blas32.General{Rows: m, Cols: n, Stride: n, Data: make([]float32, m*n)}
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1,
		blas32.General{Rows: m, Cols: k, Stride: k, Data: a.F32},
		blas32.General{Rows: k, Cols: n, Stride: n, Data: b.F32}, 0, c)
	return c.Data
}

func TestCPUMatMul(t *testing.T) {
	rng := rand.New(rand.NewSource(2))
	ref := NewRef()
	for _, c := range []struct {
		m, n, k int
		atol    float64 // f32 sums of k products of values in [-1, 1]
	}{
		{7, 13, 29, 1e-5}, {1, 1, 1, 1e-6}, {12, 32, 256, 5e-5}, {50, 77, 300, 5e-5},
		{77, 77, 40, 1e-5}, {200, 600, 64, 2e-5}, {3, 0, 4, 0},
	} {
		a, b := randF32(rng, -1, 1, c.m, c.k), randF32(rng, -1, 1, c.k, c.n)
		want := New(c.m, c.n)
		if err := ref.MatMul(want, a, b); err != nil {
			t.Fatal(err)
		}
		blasOut := sgemm(a, b)
		eachFamily(t, func(t *testing.T, be *CPU) {
			y, check := guarded(t, c.m, c.n)
			if err := be.MatMul(y, a, b); err != nil {
				t.Fatal(err)
			}
			check()
			name := fmt.Sprintf("%dx%dx%d", c.m, c.n, c.k)
			closeTo(t, name+" vs ref", y.F32, want.F32, c.atol, 1e-5)
			closeTo(t, name+" vs blas32", y.F32, blasOut, 2*c.atol, 1e-5)
		})
	}
}

func TestCPUConv2D(t *testing.T) {
	rng := rand.New(rand.NewSource(3))
	ref := NewRef()
	type cs struct {
		b, c, h, w, o, kh, kw int
		p                     Conv2DParams
		bias                  bool
		atol                  float64 // f32 sums of c*kh*kw products in [-1, 1]
		dts                   []DType
	}
	cases := []cs{
		{1, 3, 7, 9, 5, 3, 3, Pad(1, 1), true, 1e-5, dtypes},
		{2, 5, 11, 13, 7, 3, 3, Pad(2, 1), false, 1e-5, dtypes},
		{1, 4, 9, 9, 6, 3, 3, Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1}, true, 1e-5, dtypes},
		{1, 6, 5, 70, 5, 1, 1, Pad(1, 0), true, 1e-5, dtypes}, // direct 1x1, rows longer than a panel
		{2, 3, 6, 10, 4, 1, 1, Pad(2, 0), false, 1e-5, dtypes},
		{1, 3, 8, 5, 4, 2, 3, Conv2DParams{Stride: 1, PadTop: 2, PadLeft: 0, PadBottom: 1, PadRight: 3}, true, 1e-5, dtypes},
		{1, 2, 4, 4, 3, 5, 5, Pad(1, 3), true, 1e-5, dtypes}, // padding larger than the image
		{1, 17, 40, 45, 14, 3, 3, Pad(1, 1), true, 2e-5, dtypes},
		{1, 3, 7, 70, 5, 3, 3, Pad(2, 1), true, 1e-5, dtypes}, // stride-2 runs longer than 16
		{1, 2, 6, 71, 3, 4, 4, Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1}, false, 1e-5, dtypes},
		// Few positions, many channels: computed as yᵀ = im2col(x)ᵀ·wᵀ.
		{1, 40, 4, 3, 70, 3, 3, Pad(1, 1), true, 2e-5, dtypes},
		{2, 9, 9, 7, 64, 3, 3, Pad(2, 1), false, 1e-5, dtypes},
		{1, 33, 5, 5, 96, 1, 1, Pad(1, 0), true, 1e-5, []DType{F16}},
		{1, 320, 32, 32, 320, 3, 3, Pad(1, 1), true, 2e-4, []DType{F16}}, // SD UNet conv
	}
	if testing.Short() {
		cases = cases[:len(cases)-1]
	}
	for ci, c := range cases {
		for _, dt := range c.dts {
			x := randF32(rng, -1, 1, c.b, c.c, c.h, c.w)
			w := asDType(randF32(rng, -1, 1, c.o, c.c, c.kh, c.kw), dt)
			var bias *Tensor
			if c.bias {
				bias = asDType(randF32(rng, -1, 1, c.o), dt)
			}
			ho, wo := c.p.OutSize(c.h, c.w, c.kh, c.kw)
			want := New(c.b, c.o, ho, wo)
			if err := ref.Conv2D(want, x, w, bias, c.p); err != nil {
				t.Fatal(err)
			}
			eachFamily(t, func(t *testing.T, be *CPU) {
				y, check := guarded(t, c.b, c.o, ho, wo)
				if err := be.Conv2D(y, x, w, bias, c.p); err != nil {
					t.Fatal(err)
				}
				check()
				closeTo(t, fmt.Sprintf("case %d %v", ci, dt), y.F32, want.F32, c.atol, 1e-5)
			})
		}
	}
}

func TestCPUGroupNorm(t *testing.T) {
	rng := rand.New(rand.NewSource(4))
	ref := NewRef()
	cases := []struct {
		shape  []int
		groups int
		offset float32 // added to x: checks the two-pass variance
		silu   bool
		atol   float64 // outputs are O(1); f32 normalisation
	}{
		{[]int{1, 320, 64, 64}, 32, 0, true, 2e-5},
		{[]int{2, 6, 5, 3}, 3, 0, false, 1e-5},
		{[]int{1, 4, 7}, 4, 0, true, 1e-5},
		{[]int{2, 64, 9, 11}, 32, 100, false, 2e-4}, // mean 100: f32 input spacing 8e-6 limits accuracy
		{[]int{1, 5, 1, 1}, 5, 0, false, 1e-5},      // one value per group: y = beta
	}
	for ci, c := range cases {
		for _, dt := range dtypes {
			x := randF32(rng, -2+c.offset, 2+c.offset, c.shape...)
			g := asDType(randF32(rng, 0.5, 1.5, c.shape[1]), dt)
			b := asDType(randF32(rng, -0.5, 0.5, c.shape[1]), dt)
			want := New(c.shape...)
			if err := ref.GroupNorm(want, x, g, b, c.groups, 1e-5, c.silu); err != nil {
				t.Fatal(err)
			}
			eachFamily(t, func(t *testing.T, be *CPU) {
				y, check := guarded(t, c.shape...)
				if err := be.GroupNorm(y, x, g, b, c.groups, 1e-5, c.silu); err != nil {
					t.Fatal(err)
				}
				check()
				name := fmt.Sprintf("case %d %v", ci, dt)
				closeTo(t, name, y.F32, want.F32, c.atol, 1e-5)
				xa := x.Clone() // y aliasing x
				if err := be.GroupNorm(xa, xa, g, b, c.groups, 1e-5, c.silu); err != nil {
					t.Fatal(err)
				}
				exact(t, name+" in place", xa.F32, y.F32)
			})
		}
	}
}

func TestCPULayerNorm(t *testing.T) {
	rng := rand.New(rand.NewSource(5))
	ref := NewRef()
	for ci, shape := range [][]int{{2, 77, 768}, {3, 5}, {1}, {4, 1, 33}} {
		for _, dt := range dtypes {
			c := shape[len(shape)-1]
			x := randF32(rng, -3, 5, shape...)
			g := asDType(randF32(rng, 0.5, 1.5, c), dt)
			b := asDType(randF32(rng, -0.5, 0.5, c), dt)
			want := New(shape...)
			if err := ref.LayerNorm(want, x, g, b, 1e-5); err != nil {
				t.Fatal(err)
			}
			eachFamily(t, func(t *testing.T, be *CPU) {
				y, check := guarded(t, shape...)
				if err := be.LayerNorm(y, x, g, b, 1e-5); err != nil {
					t.Fatal(err)
				}
				check()
				name := fmt.Sprintf("case %d %v", ci, dt)
				closeTo(t, name, y.F32, want.F32, 1e-5, 1e-5) // outputs O(1)
				xa := x.Clone()
				if err := be.LayerNorm(xa, xa, g, b, 1e-5); err != nil {
					t.Fatal(err)
				}
				exact(t, name+" in place", xa.F32, y.F32)
			})
		}
	}
}

func TestCPUAttention(t *testing.T) {
	rng := rand.New(rand.NewSource(6))
	ref := NewRef()
	cases := []struct {
		b, lq, lk, heads, d int
		causal              bool
		scale               float32 // q, k in [-scale, scale]
	}{
		{1, 7, 13, 3, 5, false, 1},
		{2, 100, 100, 2, 24, true, 2},     // causal over several key blocks
		{2, 77, 77, 12, 64, true, 1},      // CLIP text encoder
		{1, 4096, 77, 8, 40, false, 1},    // SD1.5 cross-attention at 64x64
		{1, 1024, 1024, 8, 40, false, 1},  // SD1.5 self-attention at 32x32
		{1, 256, 256, 1, 512, false, 0.3}, // VAE mid-block attention (single head)
		{1, 130, 200, 2, 160, false, 0.5},
		{1, 1, 1, 1, 1, false, 1},
		{1, 65, 65, 1, 80, true, 3}, // peaked softmax
	}
	if testing.Short() {
		cases = append(cases[:3], cases[6:]...)
	}
	for ci, c := range cases {
		q := randF32(rng, -c.scale, c.scale, c.b, c.lq, c.heads*c.d)
		k := randF32(rng, -c.scale, c.scale, c.b, c.lk, c.heads*c.d)
		v := randF32(rng, -1, 1, c.b, c.lk, c.heads*c.d)
		want := New(q.Shape...)
		if err := ref.Attention(want, q, k, v, c.heads, c.causal); err != nil {
			t.Fatal(err)
		}
		eachFamily(t, func(t *testing.T, be *CPU) {
			y, check := guarded(t, q.Shape...)
			if err := be.Attention(y, q, k, v, c.heads, c.causal); err != nil {
				t.Fatal(err)
			}
			check()
			// Outputs are averages of values in [-1, 1]; f32 dot products and exp.
			closeTo(t, fmt.Sprintf("case %d", ci), y.F32, want.F32, 2e-5, 1e-4)
		})
	}
}

func TestCPUUnary(t *testing.T) {
	rng := rand.New(rand.NewSource(7))
	x := randF32(rng, -12, 12, 3, 40001)
	copy(x.F32, []float32{0, -0, 1e-30, -1e-30, 88, -88, 100, -100, 3e38, -3e38, 0.5, -0.5})
	for op := SiLU; op <= Tanh; op++ {
		want := New(x.Shape...)
		if err := NewRef().Unary(want, x, op); err != nil {
			t.Fatal(err)
		}
		eachFamily(t, func(t *testing.T, be *CPU) {
			y, check := guarded(t, x.Shape...)
			if err := be.Unary(y, x, op); err != nil {
				t.Fatal(err)
			}
			check()
			// Polynomial exp (2e-8 relative) and A&S erf (1.5e-7 absolute).
			closeTo(t, op.String(), y.F32, want.F32, 2e-6, 2e-6)
			xa := x.Clone()
			if err := be.Unary(xa, xa, op); err != nil {
				t.Fatal(err)
			}
			exact(t, op.String()+" in place", xa.F32, y.F32)
		})
	}
}

func TestCPUElementwise(t *testing.T) {
	rng := rand.New(rand.NewSource(8))
	ref := NewRef()
	a, b := randF32(rng, -4, 4, 2, 3, 50001), randF32(rng, -4, 4, 2, 3, 50001)
	c := randF32(rng, -4, 4, 2, 3)
	g := randF32(rng, -4, 4, 5, 7, 2*33)
	tx := randF32(rng, -4, 4, 3, 37, 70)
	ca, cb := randF32(rng, -1, 1, 2, 3, 5, 7), randF32(rng, -1, 1, 2, 4, 5, 7)
	up := randF32(rng, -1, 1, 2, 3, 5, 7)
	eachFamily(t, func(t *testing.T, be *CPU) {
		for _, op := range []string{"add", "mul"} {
			want, y := New(a.Shape...), New(a.Shape...)
			f, fr := be.Add, ref.Add
			if op == "mul" {
				f, fr = be.Mul, ref.Mul
			}
			yg, check := guarded(t, a.Shape...)
			if err := f(yg, a, b); err != nil {
				t.Fatal(err)
			}
			check()
			if err := fr(want, a, b); err != nil {
				t.Fatal(err)
			}
			exact(t, op, yg.F32, want.F32)
			copy(y.F32, a.F32)
			if err := f(y, y, b); err != nil { // y aliasing a
				t.Fatal(err)
			}
			exact(t, op+" in place", y.F32, want.F32)
		}
		ys, check := guarded(t, a.Shape...)
		if err := be.Scale(ys, a, 0.18215, -0.5); err != nil {
			t.Fatal(err)
		}
		check()
		want := New(a.Shape...)
		_ = ref.Scale(want, a, 0.18215, -0.5)
		closeTo(t, "scale", ys.F32, want.F32, 1e-7, 3e-7) // one rounding (fused) or two

		yc, check := guarded(t, a.Shape...)
		if err := be.AddChannel(yc, a, c); err != nil {
			t.Fatal(err)
		}
		check()
		_ = ref.AddChannel(want, a, c)
		exact(t, "add_channel", yc.F32, want.F32)

		yg, check := guarded(t, 5, 7, 33)
		if err := be.GEGLU(yg, g); err != nil {
			t.Fatal(err)
		}
		check()
		wg := New(5, 7, 33)
		_ = ref.GEGLU(wg, g)
		closeTo(t, "geglu", yg.F32, wg.F32, 4e-6, 2e-6) // erf approximation

		yt, check := guarded(t, 3, 70, 37)
		if err := be.Transpose(yt, tx); err != nil {
			t.Fatal(err)
		}
		check()
		wt := New(3, 70, 37)
		_ = ref.Transpose(wt, tx)
		exact(t, "transpose", yt.F32, wt.F32)

		ycat, check := guarded(t, 2, 7, 5, 7)
		if err := be.Concat(ycat, ca, cb); err != nil {
			t.Fatal(err)
		}
		check()
		wcat := New(2, 7, 5, 7)
		_ = ref.Concat(wcat, ca, cb)
		exact(t, "concat", ycat.F32, wcat.F32)

		yu, check := guarded(t, 2, 3, 10, 14)
		if err := be.Upsample2x(yu, up); err != nil {
			t.Fatal(err)
		}
		check()
		wu := New(2, 3, 10, 14)
		_ = ref.Upsample2x(wu, up)
		exact(t, "upsample2x", yu.F32, wu.F32)

		// Odd sizes: the 2x map without its last row and/or column.
		for _, o := range [][2]int{{9, 14}, {10, 13}, {9, 13}} {
			yo, check := guarded(t, 2, 3, o[0], o[1])
			if err := be.Upsample2x(yo, up); err != nil {
				t.Fatal(err)
			}
			check()
			for p := 0; p < 6; p++ {
				for i := 0; i < o[0]; i++ {
					for j := 0; j < o[1]; j++ {
						if got, want := yo.F32[(p*o[0]+i)*o[1]+j], wu.F32[(p*10+i)*14+j]; got != want {
							t.Fatalf("upsample2x to %v: [%d %d %d] = %v, want %v", o, p, i, j, got, want)
						}
					}
				}
			}
		}
	})
}

func TestCPUCasts(t *testing.T) {
	all := make([]uint16, 1<<16)
	for i := range all {
		all[i] = uint16(i)
	}
	rng := rand.New(rand.NewSource(9))
	f := randF32(rng, -70000, 70000, 5000)
	copy(f.F32, []float32{0, float32(math.Copysign(0, -1)), 1e-8, -6e-8, 3e-5, 65504, 65520, math.MaxFloat32, 1.00048828125,
		float32(math.Inf(1)), float32(math.Inf(-1)), 5.96e-8, 2.98e-8, 3.0e-8})
	for i := 100; i < 1000; i++ {
		f.F32[i] = float32(math.Ldexp(rng.Float64()-0.5, -rng.Intn(30)))
	}
	eachFamily(t, func(t *testing.T, be *CPU) {
		for _, dt := range []DType{F16, BF16} {
			h := FromHalf(all, dt, len(all))
			y, check := guarded(t, len(all))
			if err := be.HalfToF32(y, h); err != nil {
				t.Fatal(err)
			}
			check()
			want := h.Float32s()
			for i := range want {
				if math.IsNaN(float64(want[i])) != math.IsNaN(float64(y.F32[i])) ||
					(!math.IsNaN(float64(want[i])) && math.Float32bits(want[i]) != math.Float32bits(y.F32[i])) {
					t.Fatalf("%v -> f32: %#04x = %v, want %v", dt, i, y.F32[i], want[i])
				}
			}
			out := FromHalf(make([]uint16, f.Numel()), dt, f.Numel())
			if err := be.F32ToHalf(out, f.Reshape(f.Numel())); err != nil {
				t.Fatal(err)
			}
			for i, v := range f.F32 {
				w := F32ToF16(v)
				if dt == BF16 {
					w = F32ToBF16(v)
				}
				if out.Half[i] != w {
					t.Fatalf("f32 -> %v: %v = %#04x, want %#04x", dt, v, out.Half[i], w)
				}
			}
		}
	})
}

func TestCPUErrors(t *testing.T) {
	be := NewCPU()
	x := New(2, 3)
	w := New(4, 5)
	half := &Tensor{Shape: []int{4, 3}, DType: F16, Half: make([]uint16, 5)} // too short
	checks := []struct {
		name string
		err  error
		want error
	}{
		{"linear K mismatch", be.Linear(New(2, 4), x, w, nil), ErrShape},
		{"linear nil weight", be.Linear(New(2, 4), x, nil, nil), ErrShape},
		{"linear short half weight", be.Linear(New(2, 4), x, half, nil), ErrDType},
		{"linear f16 activation", be.Linear(New(2, 4), asDType(x, F16), New(4, 3), nil), ErrDType},
		{"matmul", be.MatMul(New(2, 2), x, New(2, 2)), ErrShape},
		{"conv2d channels", be.Conv2D(New(1, 4, 3, 3), New(1, 3, 3, 3), New(4, 2, 1, 1), nil, Pad(1, 0)), ErrShape},
		{"conv2d stride", be.Conv2D(New(1, 4, 3, 3), New(1, 3, 3, 3), New(4, 3, 1, 1), nil, Pad(0, 0)), ErrShape},
		{"conv2d out", be.Conv2D(New(1, 4, 2, 3), New(1, 3, 3, 3), New(4, 3, 1, 1), nil, Pad(1, 0)), ErrShape},
		{"conv2d bias", be.Conv2D(New(1, 4, 3, 3), New(1, 3, 3, 3), New(4, 3, 1, 1), New(3), Pad(1, 0)), ErrShape},
		{"group_norm groups", be.GroupNorm(New(1, 6, 2), New(1, 6, 2), New(6), New(6), 4, 1e-5, false), ErrShape},
		{"group_norm gamma", be.GroupNorm(New(1, 6, 2), New(1, 6, 2), New(5), New(6), 3, 1e-5, false), ErrShape},
		{"layer_norm", be.LayerNorm(New(2, 3), x, New(4), New(3), 1e-5), ErrShape},
		{"attention heads", be.Attention(New(1, 2, 6), New(1, 2, 6), New(1, 3, 6), New(1, 3, 6), 4, false), ErrShape},
		{"attention causal", be.Attention(New(1, 2, 6), New(1, 2, 6), New(1, 3, 6), New(1, 3, 6), 2, true), ErrShape},
		{"attention no keys", be.Attention(New(1, 2, 6), New(1, 2, 6), New(1, 0, 6), New(1, 0, 6), 2, false), ErrShape},
		{"unary op", be.Unary(New(3), New(3), Unary(9)), ErrShape},
		{"add", be.Add(New(3), New(3), New(4)), ErrShape},
		{"add nil", be.Add(New(3), New(3), nil), ErrDType},
		{"mul", be.Mul(New(3), New(2), New(3)), ErrShape},
		{"scale", be.Scale(New(3), New(2), 1, 0), ErrShape},
		{"add_channel", be.AddChannel(New(2, 3, 4), New(2, 3, 4), New(3, 2)), ErrShape},
		{"geglu odd", be.GEGLU(New(2, 2), New(2, 5)), ErrShape},
		{"transpose", be.Transpose(New(2, 3, 4), New(2, 3, 4)), ErrShape},
		{"concat", be.Concat(New(2, 5, 3), New(2, 2, 3), New(2, 2, 3)), ErrShape},
		{"upsample2x", be.Upsample2x(New(1, 1, 4, 5), New(1, 1, 2, 2)), ErrShape},
	}
	for _, c := range checks {
		var oe *OpError
		if !errors.Is(c.err, c.want) || !errors.As(c.err, &oe) {
			t.Errorf("%s: err = %v, want %v as *OpError", c.name, c.err, c.want)
		}
	}
	if err := be.SetKernels("sse9"); err == nil {
		t.Error("SetKernels accepted an unknown family")
	}
}

// TestCPUEnvPortable runs this test binary again with GOSD_CPU=portable and
// checks that the child picked the portable kernels and passes the kernel tests.
func TestCPUEnvPortable(t *testing.T) {
	if os.Getenv("GOSD_CPU_CHILD") == "1" {
		if got := NewCPU().Name(); got != "cpu/portable" {
			t.Fatalf("with GOSD_CPU=portable, Name() = %q", got)
		}
		return
	}
	if testing.Short() {
		t.Skip("spawns a subprocess")
	}
	cmd := exec.Command(os.Args[0], "-test.run=^(TestCPUEnvPortable|TestCPULinear|TestCPUAttention)$", "-test.short")
	cmd.Env = append(os.Environ(), "GOSD_CPU=portable", "GOSD_CPU_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child with GOSD_CPU=portable failed: %v\n%s", err, out)
	}
}

// TestCPUThreads checks SetThreads and that results do not depend on the
// thread count (each output element is summed in the same order).
func TestCPUThreads(t *testing.T) {
	be := NewCPU()
	defer be.SetThreads(0)
	rng := rand.New(rand.NewSource(10))
	x := randF32(rng, -1, 1, 2, 9, 33, 35)
	w := asDType(randF32(rng, -1, 1, 40, 9, 3, 3), F16)
	q := randF32(rng, -1, 1, 1, 300, 80)
	var outs [2][]float32
	for i, n := range []int{1, 3} {
		be.SetThreads(n)
		if be.Threads() != n {
			t.Fatalf("Threads() = %d after SetThreads(%d)", be.Threads(), n)
		}
		y, a := New(2, 40, 33, 35), New(1, 300, 80)
		if err := be.Conv2D(y, x, w, nil, Pad(1, 1)); err != nil {
			t.Fatal(err)
		}
		if err := be.Attention(a, q, q, q, 2, false); err != nil {
			t.Fatal(err)
		}
		outs[i] = append(y.F32, a.F32...)
	}
	exact(t, "1 thread vs 3 threads", outs[1], outs[0])
}
