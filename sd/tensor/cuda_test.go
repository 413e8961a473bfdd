//go:build cuda

package tensor

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// The CUDA backend is checked op by op against the native CPU backend on SD
// shapes and odd shapes. Errors are measured as max|gpu-cpu| / RMS(cpu);
// tolerances sit beside each case:
//   - f32 element-wise 1e-5 (libm vs CUDA expf/erff/tanhf differ by ulps);
//   - f32 norms, GEMM and direct conv 1e-4 (summation order);
//   - f16 tensor-core paths 1e-2 (inputs rounded to 2^-11 relative, f32
//     accumulation: error grows like sqrt(K) * 2^-11 of the RMS output, with
//     the max over 10^6 outputs about 5 sigma);
//   - bf16 paths 6e-2 (2^-8 relative rounding, 8x f16's).
// With GOSD_CUDA_REPORT=path every comparison is appended to that file as a
// JSON line (bench/gpu/run.sh collects them).

// cudaOrSkip opens GPU 0 or skips the test.
func cudaOrSkip(t testing.TB) *CUDA {
	t.Helper()
	c, err := NewCUDA(0)
	if err != nil {
		t.Skipf("CUDA backend unavailable (no GPU or driver): %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// tooBigToEmulate reports, and logs, a case of more than 5e8 flops when c
// runs on the host emulation of libgosd_cuda (kernels/emu/run.sh --lib), which
// takes minutes for SD-sized products; on a GPU every case runs.
func tooBigToEmulate(t *testing.T, c *CUDA, name string, flops float64) bool {
	if flops <= 5e8 || !strings.Contains(c.Name(), "host emulation") {
		return false
	}
	t.Logf("%s: %.2g flops, skipped under the host emulation", name, flops)
	return true
}

func cuRand(r *rand.Rand, scale float32, shape ...int) *Tensor {
	t := New(shape...)
	for i := range t.F32 {
		t.F32[i] = (r.Float32()*2 - 1) * scale
	}
	return t
}

// cuAs returns t stored as dt (F16/BF16 rounded to nearest even).
func cuAs(t *Tensor, dt DType) *Tensor {
	if dt == F32 {
		return t
	}
	h := make([]uint16, len(t.F32))
	for i, v := range t.F32 {
		if dt == F16 {
			h[i] = F32ToF16(v)
		} else {
			h[i] = F32ToBF16(v)
		}
	}
	return FromHalf(h, dt, t.Shape...)
}

// cuTol is the tolerance of a tensor-core path computing in dt.
func cuTol(dt DType) float64 {
	switch dt {
	case F16:
		return 1e-2
	case BF16:
		return 6e-2
	}
	return 1e-4
}

type cuRecord struct {
	Op     string  `json:"op"`
	Case   string  `json:"case"`
	Err    float64 `json:"max_err_over_rms"`
	Tol    float64 `json:"tol"`
	Pass   bool    `json:"pass"`
	Values int     `json:"values"`
}

// cuCompare fails t when max|got-want|/RMS(want) exceeds tol or got has NaNs.
func cuCompare(t *testing.T, op, name string, got, want []float32, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s %s: %d values, want %d", op, name, len(got), len(want))
	}
	var mx, ss float64
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		mx = math.Max(mx, d)
		ss += float64(want[i]) * float64(want[i])
	}
	rms := math.Sqrt(ss / math.Max(1, float64(len(want))))
	e := mx
	if rms > 0 {
		e = mx / rms
	}
	rec := cuRecord{Op: op, Case: name, Err: e, Tol: tol, Pass: e <= tol, Values: len(want)}
	if path := os.Getenv("GOSD_CUDA_REPORT"); path != "" {
		if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			if math.IsInf(rec.Err, 0) {
				rec.Err = -1 // JSON has no infinity; -1 marks NaN or Inf output
			}
			b, _ := json.Marshal(rec)
			f.Write(append(b, '\n'))
			f.Close()
		}
	}
	if !(e <= tol) {
		t.Errorf("%s %s: max error %.3g of RMS %.3g exceeds %.g", op, name, e, rms, tol)
	}
}

// TestCUDAShapeErrors runs without a GPU: shape checks come before any
// device work and return ErrShape, as on the CPU backend.
func TestCUDAShapeErrors(t *testing.T) {
	var c CUDA // never touches the device on these paths
	x := New(1, 4, 8, 8)
	err := c.Conv2D(New(1, 2, 8, 8), x, New(2, 3, 3, 3), nil, Pad(1, 1))
	if !errors.Is(err, ErrShape) {
		t.Errorf("Conv2D with C mismatch: %v, want ErrShape", err)
	}
	err = c.Attention(New(1, 5, 12), New(1, 5, 12), New(1, 6, 12), New(1, 6, 12), 5, false)
	if !errors.Is(err, ErrShape) {
		t.Errorf("Attention with 12 %% 5 heads: %v, want ErrShape", err)
	}
	err = c.Linear(New(3, 4), New(3, 5), New(4, 6), nil)
	if !errors.Is(err, ErrShape) {
		t.Errorf("Linear with K mismatch: %v, want ErrShape", err)
	}
	err = c.Add(New(3), FromHalf(make([]uint16, 3), F16, 3), New(3))
	if !errors.Is(err, ErrDType) {
		t.Errorf("Add with an f16 input: %v, want ErrDType", err)
	}
}

func TestCUDALinear(t *testing.T) {
	c := cudaOrSkip(t)
	cpu := NewCPU()
	r := rand.New(rand.NewPCG(1, 1))
	cases := []struct {
		x    []int
		n    int
		bias bool
	}{
		{[]int{2, 77, 768}, 320, false},   // cross-attention k/v projection
		{[]int{2, 4096, 320}, 1280, true}, // feed-forward at 64x64 (GEGLU input is 2560)
		{[]int{2, 1280}, 1280, true},      // time embedding
		{[]int{3, 5, 7}, 11, true},        // odd
	}
	for _, cs := range cases {
		x := cuRand(r, 1, cs.x...)
		k := cs.x[len(cs.x)-1]
		w := cuRand(r, float32(1/math.Sqrt(float64(k))), cs.n, k)
		var b *Tensor
		if cs.bias {
			b = cuRand(r, 1, cs.n)
		}
		ys := append(append([]int(nil), cs.x[:len(cs.x)-1]...), cs.n)
		if tooBigToEmulate(t, c, fmt.Sprint(cs.x), 2*float64(Numel(cs.x))*float64(cs.n)) {
			continue
		}
		for _, dt := range []DType{F32, F16, BF16} {
			wt, bt := cuAs(w, dt), b
			if b != nil {
				bt = cuAs(b, dt)
			}
			want, got := New(ys...), New(ys...)
			if err := cpu.Linear(want, x, wt, bt); err != nil {
				t.Fatal(err)
			}
			if err := c.Linear(got, x, wt, bt); err != nil {
				t.Fatal(err)
			}
			cuCompare(t, "linear", fmt.Sprintf("%v->%d %v", cs.x, cs.n, dt), got.F32, want.F32, cuTol(dt))
		}
	}
}

func TestCUDAMatMul(t *testing.T) {
	c := cudaOrSkip(t)
	cpu := NewCPU()
	r := rand.New(rand.NewPCG(2, 2))
	for _, s := range [][3]int{{77, 768, 77}, {4096, 40, 77}, {5, 3, 7}} {
		a, b := cuRand(r, 1, s[0], s[1]), cuRand(r, 1, s[1], s[2])
		want, got := New(s[0], s[2]), New(s[0], s[2])
		if err := cpu.MatMul(want, a, b); err != nil {
			t.Fatal(err)
		}
		if err := c.MatMul(got, a, b); err != nil {
			t.Fatal(err)
		}
		cuCompare(t, "matmul", fmt.Sprint(s), got.F32, want.F32, 1e-4)
	}
}

func TestCUDAConv2D(t *testing.T) {
	c := cudaOrSkip(t)
	cpu := NewCPU()
	r := rand.New(rand.NewPCG(3, 3))
	cases := []struct {
		name string
		x    []int
		o, k int
		p    Conv2DParams
	}{
		{"unet 3x3 320", []int{2, 320, 64, 64}, 320, 3, Pad(1, 1)},
		{"conv_in C=4", []int{2, 4, 64, 64}, 320, 3, Pad(1, 1)},
		{"downsample s2", []int{2, 640, 32, 32}, 640, 3, Pad(2, 1)},
		{"1x1 skip", []int{2, 640, 32, 32}, 320, 1, Pad(1, 0)},
		{"vae s2 bottom-right pad", []int{1, 128, 33, 31}, 128, 3, Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1}},
		{"odd", []int{1, 3, 7, 9}, 5, 3, Pad(1, 1)},
		{"odd 5x5 s3", []int{2, 6, 11, 10}, 7, 5, Conv2DParams{Stride: 3, PadTop: 2, PadLeft: 1, PadBottom: 0, PadRight: 2}},
	}
	for _, cs := range cases {
		ci := cs.x[1]
		x := cuRand(r, 1, cs.x...)
		w := cuRand(r, float32(1/math.Sqrt(float64(ci*cs.k*cs.k))), cs.o, ci, cs.k, cs.k)
		b := cuRand(r, 1, cs.o)
		ho, wo := cs.p.OutSize(cs.x[2], cs.x[3], cs.k, cs.k)
		if tooBigToEmulate(t, c, cs.name, 2*float64(cs.x[0]*cs.o*ho*wo*ci*cs.k*cs.k)) {
			continue
		}
		dts := []DType{F16, BF16}
		if Numel(cs.x) < 300000 {
			dts = append(dts, F32) // the direct f32 kernel is slow on big shapes
		}
		for _, dt := range dts {
			want, got := New(cs.x[0], cs.o, ho, wo), New(cs.x[0], cs.o, ho, wo)
			wt, bt := cuAs(w, dt), cuAs(b, dt)
			if err := cpu.Conv2D(want, x, wt, bt, cs.p); err != nil {
				t.Fatal(err)
			}
			if err := c.Conv2D(got, x, wt, bt, cs.p); err != nil {
				t.Fatal(err)
			}
			cuCompare(t, "conv2d", cs.name+" "+dt.String(), got.F32, want.F32, cuTol(dt))
		}
	}
}

func TestCUDAGroupNorm(t *testing.T) {
	c := cudaOrSkip(t)
	cpu := NewCPU()
	r := rand.New(rand.NewPCG(4, 4))
	cases := []struct {
		x    []int
		g    int
		silu bool
		dt   DType
	}{
		{[]int{2, 320, 64, 64}, 32, true, F16},
		{[]int{1, 512, 32, 32}, 32, false, F32},
		{[]int{1, 96, 7, 5}, 32, true, BF16},
		{[]int{3, 6, 5}, 3, false, F32},
	}
	for _, cs := range cases {
		x := cuRand(r, 3, cs.x...)
		for i := range x.F32 {
			x.F32[i] += 5 // a mean far from 0 tests the two-pass variance
		}
		gm, bt := cuAs(cuRand(r, 1, cs.x[1]), cs.dt), cuAs(cuRand(r, 1, cs.x[1]), cs.dt)
		want, got := New(cs.x...), New(cs.x...)
		if err := cpu.GroupNorm(want, x, gm, bt, cs.g, 1e-5, cs.silu); err != nil {
			t.Fatal(err)
		}
		if err := c.GroupNorm(got, x, gm, bt, cs.g, 1e-5, cs.silu); err != nil {
			t.Fatal(err)
		}
		cuCompare(t, "group_norm", fmt.Sprintf("%v G=%d silu=%v %v", cs.x, cs.g, cs.silu, cs.dt), got.F32, want.F32, 1e-4)
	}
}

func TestCUDALayerNorm(t *testing.T) {
	c := cudaOrSkip(t)
	cpu := NewCPU()
	r := rand.New(rand.NewPCG(5, 5))
	for _, s := range [][]int{{2, 4096, 320}, {1, 77, 768}, {3, 7}} {
		x := cuRand(r, 2, s...)
		ch := s[len(s)-1]
		gm, bt := cuAs(cuRand(r, 1, ch), F16), cuRand(r, 1, ch)
		want, got := New(s...), New(s...)
		if err := cpu.LayerNorm(want, x, gm, bt, 1e-5); err != nil {
			t.Fatal(err)
		}
		if err := c.LayerNorm(got, x, gm, bt, 1e-5); err != nil {
			t.Fatal(err)
		}
		cuCompare(t, "layer_norm", fmt.Sprint(s), got.F32, want.F32, 1e-4)
	}
}

func TestCUDAAttention(t *testing.T) {
	c := cudaOrSkip(t)
	cpu := NewCPU()
	r := rand.New(rand.NewPCG(6, 6))
	cases := []struct {
		name      string
		b, lq, lk int
		heads, d  int
		causal    bool
		dts       []DType
	}{
		{"sd15 self 64x64 D=40", 2, 4096, 4096, 8, 40, false, []DType{F16, BF16}},
		{"sd15 cross 77 D=40", 2, 4096, 77, 8, 40, false, []DType{F16}},
		{"sd15 32x32 D=80", 2, 1024, 1024, 8, 80, false, []DType{F16}},
		{"sd15 16x16 D=160 cross", 2, 256, 77, 8, 160, false, []DType{F16, BF16}},
		{"clip causal D=64", 1, 77, 77, 12, 64, true, []DType{F16, F32}},
		{"sdxl cross 154 D=64", 1, 1024, 154, 10, 64, false, []DType{F16}},
		{"D=128", 1, 300, 300, 2, 128, false, []DType{F16}},
		{"vae 512 single head", 1, 1024, 1024, 1, 512, false, []DType{F16}}, // f32 kernel
		{"odd", 3, 33, 5, 3, 24, false, []DType{F16, F32}},
		{"odd causal", 1, 70, 70, 2, 8, true, []DType{BF16}},
	}
	for _, cs := range cases {
		hd := cs.heads * cs.d
		if tooBigToEmulate(t, c, cs.name, 4*float64(cs.b*cs.heads*cs.lq*cs.lk*cs.d)) {
			continue
		}
		q, k, v := cuRand(r, 2, cs.b, cs.lq, hd), cuRand(r, 2, cs.b, cs.lk, hd), cuRand(r, 1, cs.b, cs.lk, hd)
		want := New(cs.b, cs.lq, hd)
		if err := cpu.Attention(want, q, k, v, cs.heads, cs.causal); err != nil {
			t.Fatal(err)
		}
		for _, dt := range cs.dts {
			if err := c.SetAttentionDType(dt); err != nil {
				t.Fatal(err)
			}
			got := New(cs.b, cs.lq, hd)
			if err := c.Attention(got, q, k, v, cs.heads, cs.causal); err != nil {
				t.Fatal(err)
			}
			tol := cuTol(dt)
			if cs.d > 160 {
				tol = 1e-4 // always the f32 kernel
			}
			cuCompare(t, "attention", cs.name+" "+dt.String(), got.F32, want.F32, tol)
		}
	}
	c.SetAttentionDType(F16)
}

func TestCUDAElementwise(t *testing.T) {
	c := cudaOrSkip(t)
	cpu := NewCPU()
	r := rand.New(rand.NewPCG(7, 7))
	for _, s := range [][]int{{2, 320, 64, 64}, {1, 3, 5, 7}} {
		x, x2 := cuRand(r, 4, s...), cuRand(r, 4, s...)
		name := fmt.Sprint(s)
		run := func(op string, tol float64, want, got *Tensor, f func(b Backend, y *Tensor) error) {
			t.Helper()
			if err := f(cpu, want); err != nil {
				t.Fatal(err)
			}
			if err := f(c, got); err != nil {
				t.Fatal(err)
			}
			cuCompare(t, op, name, got.F32, want.F32, tol)
		}
		for op := SiLU; op <= Tanh; op++ {
			run("unary "+op.String(), 1e-5, New(s...), New(s...), func(b Backend, y *Tensor) error { return b.Unary(y, x, op) })
		}
		run("add", 1e-6, New(s...), New(s...), func(b Backend, y *Tensor) error { return b.Add(y, x, x2) })
		run("mul", 1e-6, New(s...), New(s...), func(b Backend, y *Tensor) error { return b.Mul(y, x, x2) })
		run("scale", 1e-6, New(s...), New(s...), func(b Backend, y *Tensor) error { return b.Scale(y, x, 0.18215, -0.5) })
		ch := cuRand(r, 1, s[0], s[1])
		run("add_channel", 1e-6, New(s...), New(s...), func(b Backend, y *Tensor) error { return b.AddChannel(y, x, ch) })
		up := []int{s[0], s[1], 2 * s[2], 2 * s[3]}
		run("upsample2x", 0, New(up...), New(up...), func(b Backend, y *Tensor) error { return b.Upsample2x(y, x) })
		odd := []int{s[0], s[1], 2*s[2] - 1, 2 * s[3]}
		run("upsample2x odd", 0, New(odd...), New(odd...), func(b Backend, y *Tensor) error { return b.Upsample2x(y, x) })
		cat := []int{s[0], s[1] + 2, s[2], s[3]}
		xb := cuRand(r, 1, s[0], 2, s[2], s[3])
		run("concat", 0, New(cat...), New(cat...), func(b Backend, y *Tensor) error { return b.Concat(y, x, xb) })
		x3 := x.Reshape(s[0], s[1], s[2]*s[3])
		tr := []int{s[0], s[2] * s[3], s[1]}
		run("transpose", 0, New(tr...), New(tr...), func(b Backend, y *Tensor) error { return b.Transpose(y, x3) })
	}
	for _, s := range [][]int{{2, 4096, 2560}, {3, 5, 14}} {
		x := cuRand(r, 3, s...)
		ys := []int{s[0], s[1], s[2] / 2}
		want, got := New(ys...), New(ys...)
		if err := cpu.GEGLU(want, x); err != nil {
			t.Fatal(err)
		}
		if err := c.GEGLU(got, x); err != nil {
			t.Fatal(err)
		}
		cuCompare(t, "geglu", fmt.Sprint(s), got.F32, want.F32, 1e-5)
	}
}

// TestCUDAWeightCache: a weight is uploaded once and reused, and a reshaped
// view of it shares the cached copy.
func TestCUDAWeightCache(t *testing.T) {
	c := cudaOrSkip(t)
	r := rand.New(rand.NewPCG(8, 8))
	w := cuAs(cuRand(r, 0.1, 64, 32), F16)
	x := cuRand(r, 1, 10, 32)
	y1, y2 := New(10, 64), New(10, 64)
	if err := c.Linear(y1, x, w, nil); err != nil {
		t.Fatal(err)
	}
	if got := c.WeightBytes(); got != 64*32*2 {
		t.Fatalf("WeightBytes after one weight = %d, want %d", got, 64*32*2)
	}
	if err := c.Linear(y2, x, w.Reshape(64, 32), nil); err != nil {
		t.Fatal(err)
	}
	if got := c.WeightBytes(); got != 64*32*2 {
		t.Fatalf("WeightBytes after reuse = %d, want %d (uploaded again)", got, 64*32*2)
	}
	cuCompare(t, "linear", "cached weight", y2.F32, y1.F32, 0)
	if err := c.ReleaseWeights(); err != nil || c.WeightBytes() != 0 {
		t.Fatalf("ReleaseWeights: %v, %d bytes left", err, c.WeightBytes())
	}
}

// TestCUDADeviceResident: ops on device tensors (Alloc, ToDevice) give
// exactly what the same ops give on host tensors (the same kernels run),
// in place where the contract allows it; a freed tensor and another
// backend's tensor are refused with ErrBackend; nothing stays allocated.
func TestCUDADeviceResident(t *testing.T) {
	c := cudaOrSkip(t)
	r := rand.New(rand.NewPCG(9, 9))
	x := cuRand(r, 2, 2, 64, 9, 7)
	w := cuAs(cuRand(r, 0.05, 32, 64, 3, 3), F16)
	bias := cuAs(cuRand(r, 0.5, 32), F16)
	gamma, beta := cuRand(r, 1, 32), cuRand(r, 1, 32)
	lw := cuAs(cuRand(r, 0.1, 48, 32), F16)
	dev := func(h *Tensor) *Tensor {
		d, err := c.ToDevice(h)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	host := func(d *Tensor) []float32 {
		out := make([]float32, d.Numel())
		if err := c.ToHost(out, d); err != nil {
			t.Fatal(err)
		}
		return out
	}
	alloc := func(shape ...int) *Tensor {
		d, err := c.Alloc(shape...)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	// Host chain: conv -> group norm + SiLU -> transpose -> linear -> attention.
	hc := New(2, 32, 9, 7)
	must(c.Conv2D(hc, x, w, bias, Pad(1, 1)))
	hg := New(2, 32, 9, 7)
	must(c.GroupNorm(hg, hc, gamma, beta, 8, 1e-5, true))
	ht := New(2, 63, 32)
	must(c.Transpose(ht, hg.Reshape(2, 32, 63)))
	hl := New(2, 63, 48)
	must(c.Linear(hl, ht, lw, nil))
	ha := New(2, 63, 48)
	must(c.Attention(ha, hl, hl, hl, 6, false))
	hs := New(2, 63, 48)
	must(c.Add(hs, ha, hl))

	// Device chain, in place where allowed.
	xd := dev(x)
	dc := alloc(2, 32, 9, 7)
	must(c.Conv2D(dc, xd, w, bias, Pad(1, 1)))
	must(c.GroupNorm(dc, dc, gamma, beta, 8, 1e-5, true))
	dt := alloc(2, 63, 32)
	must(c.Transpose(dt, dc.Reshape(2, 32, 63)))
	dl := alloc(2, 63, 48)
	must(c.Linear(dl, dt, lw, nil))
	da := alloc(2, 63, 48)
	must(c.Attention(da, dl, dl, dl, 6, false))
	must(c.Add(da, da, dl))
	for _, cmp := range []struct {
		name string
		got  *Tensor
		want []float32
	}{{"conv+group_norm", dc, hg.F32}, {"transpose", dt, ht.F32}, {"linear", dl, hl.F32}, {"attention+add", da, hs.F32}} {
		cuCompare(t, "device_resident", cmp.name, host(cmp.got), cmp.want, 1e-5)
	}
	// A host destination from device inputs, and a device one from host inputs.
	mixed := New(2, 63, 48)
	must(c.Add(mixed, da, hl))
	md := alloc(2, 63, 48)
	must(c.Add(md, hs, hl))
	cuCompare(t, "device_resident", "mixed host/device", mixed.F32, host(md), 1e-5)

	Release(xd, dc, dt, dl, md)
	err := c.Add(da, da, dl) // dl was freed
	if !errors.Is(err, ErrBackend) {
		t.Errorf("op on a freed device tensor: %v, want ErrBackend", err)
	}
	Release(da)
	if n := c.LiveTensors(); n != 0 {
		t.Errorf("%d device tensors left allocated", n)
	}
	other := cudaOrSkip(t) // a second backend on the same GPU owns its own memory
	od := alloc(2, 63, 48)
	if err := other.Add(New(2, 63, 48), od, hl); !errors.Is(err, ErrBackend) {
		t.Errorf("op on another backend's device tensor: %v, want ErrBackend", err)
	}
	Release(od)
}

// TestCUDAPrefetchWeights: prefetched weights (one block, copy stream) give
// the same result as weights uploaded on first use, are counted once, and
// are freed with ReleaseWeights.
func TestCUDAPrefetchWeights(t *testing.T) {
	c := cudaOrSkip(t)
	r := rand.New(rand.NewPCG(10, 10))
	w1, w2 := cuAs(cuRand(r, 0.1, 64, 32), F16), cuAs(cuRand(r, 0.1, 32, 64), BF16)
	b1 := cuRand(r, 1, 64)
	x := cuRand(r, 1, 10, 32)
	run := func() []float32 {
		h, y := New(10, 64), New(10, 32)
		if err := c.Linear(h, x, w1, b1); err != nil {
			t.Fatal(err)
		}
		if err := c.Linear(y, h, w2, nil); err != nil {
			t.Fatal(err)
		}
		return y.F32
	}
	want := run()
	if err := c.ReleaseWeights(); err != nil {
		t.Fatal(err)
	}
	if err := c.PrefetchWeights([]*Tensor{w1, b1, w2, w1.Reshape(32, 64)}); err != nil {
		t.Fatal(err)
	}
	size := int64(64*32*2 + 64*4 + 32*64*2)
	if got := c.WeightBytes(); got != size {
		t.Errorf("WeightBytes after prefetch = %d, want %d", got, size)
	}
	cuCompare(t, "prefetch", "linear chain", run(), want, 0)
	if got := c.WeightBytes(); got != size {
		t.Errorf("WeightBytes after use = %d, want %d (uploaded again)", got, size)
	}
	if err := c.ReleaseWeights(); err != nil || c.WeightBytes() != 0 {
		t.Fatalf("ReleaseWeights: %v, %d bytes left", err, c.WeightBytes())
	}
}
