//go:build cuda

package cuda_test

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/gosd/gosd/bindings/cuda"
	"github.com/gosd/gosd/sd/tensor"
)

// gpu returns a stream on device 0, or skips the test when there is no GPU.
func gpu(t testing.TB) *cuda.Stream {
	t.Helper()
	if _, err := cuda.DeviceCount(); err != nil {
		t.Skipf("no CUDA device: %v", err)
	}
	if err := cuda.SetDevice(0); err != nil {
		t.Fatal(err)
	}
	s, err := cuda.NewStream()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestNoDeviceError runs everywhere: without a GPU DeviceCount must fail with
// an error wrapping ErrNoDevice; with one it must report at least one device.
func TestNoDeviceError(t *testing.T) {
	n, err := cuda.DeviceCount()
	if err != nil {
		if !errors.Is(err, cuda.ErrNoDevice) {
			t.Fatalf("DeviceCount error %v does not wrap ErrNoDevice", err)
		}
		if n != 0 {
			t.Fatalf("DeviceCount = %d with error %v", n, err)
		}
		return
	}
	if n < 1 {
		t.Fatalf("DeviceCount = %d without error", n)
	}
}

// TestInvalidArguments runs everywhere: the C side rejects bad sizes before
// touching the device, with StatusInvalid and a message naming the op.
func TestInvalidArguments(t *testing.T) {
	s := new(cuda.Stream) // the legacy default stream; no device work happens
	cases := []struct {
		name string
		err  error
	}{
		{"attention D=0", s.Attention(cuda.F16, 0, 0, 0, 0, 1, 4, 4, 1, 0, false)},
		{"attention D=200 f16", s.Attention(cuda.F16, 1, 1, 1, 1, 1, 4, 4, 1, 200, false)},
		{"attention causal Lq!=Lk", s.Attention(cuda.BF16, 1, 1, 1, 1, 1, 4, 5, 1, 40, true)},
		{"conv stride 0", s.Conv2D(cuda.F16, 1, 1, 1, 0, cuda.F16, cuda.ConvShape{B: 1, C: 1, H: 4, W: 4, O: 1, KH: 3, KW: 3})},
		{"conv kernel > input", s.Conv2D(cuda.F32, 1, 1, 1, 0, cuda.F32, cuda.ConvShape{B: 1, C: 1, H: 2, W: 2, O: 1, KH: 3, KW: 3, Stride: 1})},
		{"group norm C%G", s.GroupNorm(1, 1, 1, cuda.F32, 1, cuda.F32, 1, 30, 4, 32, 1e-5, false)},
		{"layer norm C=0", s.LayerNorm(1, 1, 1, cuda.F32, 1, cuda.F32, 1, 0, 1e-5)},
		{"unary op 9", s.Unary(1, 1, 4, 9)},
		{"cast f32 to f32", s.Cast(1, 1, 4, cuda.F32, cuda.F32)},
	}
	for _, c := range cases {
		var e *cuda.Error
		if !errors.As(c.err, &e) || e.Status != cuda.StatusInvalid || e.Msg == "" {
			t.Errorf("%s: got %v, want a StatusInvalid *cuda.Error with a message", c.name, c.err)
		}
	}
}

const guard = 64 // elements of guard band on each side of an output

// guarded is a device buffer of n elements of size es bytes with guard bands
// of 0xff bytes on both sides; Ptr is the first element.
type guarded struct {
	base cuda.Ptr
	n    int
	es   int
}

func newGuarded(t testing.TB, s *cuda.Stream, n, es int) guarded {
	t.Helper()
	base, err := cuda.Malloc((n + 2*guard) * es)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cuda.Free(base) })
	if err := s.Memset(base, 0xff, (n+2*guard)*es); err != nil {
		t.Fatal(err)
	}
	return guarded{base, n, es}
}

func (g guarded) Ptr() cuda.Ptr { return g.base + cuda.Ptr(guard*g.es) }

// check downloads the guard bands and fails if a kernel wrote into them.
func (g guarded) check(t testing.TB, s *cuda.Stream) {
	t.Helper()
	all := make([]uint16, (g.n+2*guard)*g.es/2)
	if err := s.Download(all, g.base); err != nil {
		t.Fatal(err)
	}
	gu := guard * g.es / 2
	for i, v := range all {
		if (i < gu || i >= len(all)-gu) && v != 0xffff {
			t.Fatalf("guard band overwritten at 16-bit word %d of %d", i, len(all))
		}
	}
}

func upload(t testing.TB, s *cuda.Stream, data any, n, es int) cuda.Ptr {
	t.Helper()
	p, err := cuda.Malloc(n * es)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cuda.Free(p) })
	if err := s.Upload(p, data); err != nil {
		t.Fatal(err)
	}
	return p
}

func randF32(r *rand.Rand, n int, scale float32) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = (r.Float32()*2 - 1) * scale
	}
	return x
}

// TestCastExact: the device casts round exactly like tensor.F32ToF16 and
// tensor.F32ToBF16 (round to nearest even), including subnormals and
// overflow, and stay inside their buffers.
func TestCastExact(t *testing.T) {
	s := gpu(t)
	r := rand.New(rand.NewPCG(1, 2))
	x := randF32(r, 1000, 70000) // beyond the f16 range: overflow to inf
	x = append(x, 0, float32(math.Copysign(0, -1)), 1e-7, -3e-8, 65504, 65520, float32(math.Inf(1)), 1.0009765625, 1.00048828125)
	n := len(x)
	xd := upload(t, s, x, n, 4)
	for _, dt := range []cuda.DType{cuda.F16, cuda.BF16} {
		h := newGuarded(t, s, n, 2)
		if err := s.Cast(h.Ptr(), xd, n, cuda.F32, dt); err != nil {
			t.Fatal(err)
		}
		got := make([]uint16, n)
		if err := s.Download(got, h.Ptr()); err != nil {
			t.Fatal(err)
		}
		h.check(t, s)
		for i, v := range x {
			want := tensor.F32ToF16(v)
			if dt == cuda.BF16 {
				want = tensor.F32ToBF16(v)
			}
			if got[i] != want {
				t.Fatalf("cast f32->%d of %g: got %#04x, want %#04x", dt, v, got[i], want)
			}
		}
	}
}

// TestAttentionGuarded: f16 flash attention on CLIP-like odd sizes (77
// tokens, D=40 padded to 48), causal and not, against the float64 reference
// backend, with guard bands around the output. Tolerance: max error 1e-2 of
// the reference's RMS (inputs rounded to f16: 2^-11 relative each, softmax
// weights rounded to f16 before P·V).
func TestAttentionGuarded(t *testing.T) {
	s := gpu(t)
	r := rand.New(rand.NewPCG(3, 4))
	const b, l, heads, d = 2, 77, 3, 40
	n := b * l * heads * d
	q, k, v := randF32(r, n, 2), randF32(r, n, 2), randF32(r, n, 1)
	half := func(x []float32) []uint16 {
		h := make([]uint16, len(x))
		for i, f := range x {
			h[i] = tensor.F32ToF16(f)
		}
		return h
	}
	qd, kd, vd := upload(t, s, half(q), n, 2), upload(t, s, half(k), n, 2), upload(t, s, half(v), n, 2)
	for _, causal := range []bool{false, true} {
		y := newGuarded(t, s, n, 2)
		if err := s.Attention(cuda.F16, y.Ptr(), qd, kd, vd, b, l, l, heads, d, causal); err != nil {
			t.Fatal(err)
		}
		got := make([]uint16, n)
		if err := s.Download(got, y.Ptr()); err != nil {
			t.Fatal(err)
		}
		y.check(t, s)
		want := tensor.New(b, l, heads*d)
		err := tensor.NewRef().Attention(want, tensor.FromF32(q, b, l, heads*d), tensor.FromF32(k, b, l, heads*d),
			tensor.FromF32(v, b, l, heads*d), heads, causal)
		if err != nil {
			t.Fatal(err)
		}
		gf := make([]float32, n)
		for i, h := range got {
			gf[i] = tensor.F16ToF32(h)
		}
		if e := relErr(gf, want.F32); e > 1e-2 {
			t.Errorf("causal=%v: max error %.3g of RMS, want <= 1e-2", causal, e)
		}
	}
}

// TestConvGuarded: the f16 implicit-GEMM conv on an odd shape with stride 2
// and the VAE's bottom/right-only padding, against the reference, with guard
// bands. Tolerance 1e-2 of RMS (x and w rounded to f16, f32 accumulation).
func TestConvGuarded(t *testing.T) {
	s := gpu(t)
	r := rand.New(rand.NewPCG(5, 6))
	sh := cuda.ConvShape{B: 2, C: 5, H: 13, W: 11, O: 67, KH: 3, KW: 3, Stride: 2, PadBottom: 1, PadRight: 1}
	x := randF32(r, sh.B*sh.C*sh.H*sh.W, 1)
	w := randF32(r, sh.O*sh.C*sh.KH*sh.KW, 0.3)
	bias := randF32(r, sh.O, 1)
	p := tensor.Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1}
	ho, wo := p.OutSize(sh.H, sh.W, sh.KH, sh.KW)
	wh := make([]uint16, len(w))
	for i, f := range w {
		wh[i] = tensor.F32ToF16(f)
	}
	xd, wd, bd := upload(t, s, x, len(x), 4), upload(t, s, wh, len(wh), 2), upload(t, s, bias, len(bias), 4)
	n := sh.B * sh.O * ho * wo
	y := newGuarded(t, s, n, 4)
	if err := s.Conv2D(cuda.F16, y.Ptr(), xd, wd, bd, cuda.F32, sh); err != nil {
		t.Fatal(err)
	}
	got := make([]float32, n)
	if err := s.Download(got, y.Ptr()); err != nil {
		t.Fatal(err)
	}
	y.check(t, s)
	want := tensor.New(sh.B, sh.O, ho, wo)
	err := tensor.NewRef().Conv2D(want, tensor.FromF32(x, sh.B, sh.C, sh.H, sh.W),
		tensor.FromF32(w, sh.O, sh.C, sh.KH, sh.KW), tensor.FromF32(bias, sh.O), p)
	if err != nil {
		t.Fatal(err)
	}
	if e := relErr(got, want.F32); e > 1e-2 {
		t.Errorf("max error %.3g of RMS, want <= 1e-2", e)
	}
}

// relErr returns max|got-want| / RMS(want).
func relErr(got, want []float32) float64 {
	var mx, ss float64
	for i := range want {
		mx = math.Max(mx, math.Abs(float64(got[i])-float64(want[i])))
		if math.IsNaN(float64(got[i])) {
			return math.Inf(1)
		}
		ss += float64(want[i]) * float64(want[i])
	}
	rms := math.Sqrt(ss / float64(len(want)))
	if rms == 0 {
		return mx
	}
	return mx / rms
}
