package vae

import (
	"context"
	"errors"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

// tinySource makes random weights in the original TAESD key layout with
// width w and c latent channels; pool adds the TAEF2 pool branches.
func tinySource(role TinyRole, w, c int, pool bool, seed uint64) tensor.MapSource {
	r := rand.New(rand.NewPCG(seed, 1))
	m := tensor.MapSource{}
	add := func(name string, shape ...int) {
		t := tensor.New(shape...)
		fan := 1
		if len(shape) > 1 {
			fan = tensor.Numel(shape[1:])
		}
		for i := range t.F32 {
			t.F32[i] = float32(r.NormFloat64() / math.Sqrt(float64(fan)))
		}
		if len(shape) == 1 && strings.HasSuffix(name, "pool.1.weight") {
			for i := range t.F32 {
				t.F32[i] += 1
			}
		}
		m[name] = t
	}
	conv := func(name string, in, out, k int, bias bool) {
		add(name+".weight", out, in, k, k)
		if bias {
			add(name+".bias", out)
		}
	}
	block := func(i int, withPool bool) {
		for _, j := range []int{0, 2, 4} {
			conv(fmt.Sprintf("%d.conv.%d", i, j), w, w, 3, true)
		}
		if withPool {
			conv(fmt.Sprintf("%d.pool.0", i), w, 4*w, 1, false)
			add(fmt.Sprintf("%d.pool.1.weight", i), 4*w)
			add(fmt.Sprintf("%d.pool.1.bias", i), 4*w)
			conv(fmt.Sprintf("%d.pool.3", i), 4*w, w, 1, false)
		}
	}
	if role == TinyEncoder {
		conv("0", 3, w, 3, true)
		block(1, false)
		for _, i := range []int{2, 6, 10} {
			conv(fmt.Sprint(i), w, w, 3, false)
			for j := 1; j <= 3; j++ {
				block(i+j, pool && i == 10)
			}
		}
		conv("14", w, c, 3, true)
		return m
	}
	conv("1", c, w, 3, true)
	for _, i := range []int{3, 4, 5} {
		block(i, pool)
	}
	for _, i := range []int{7, 12, 17} {
		conv(fmt.Sprint(i), w, w, 3, false)
	}
	for _, i := range []int{8, 9, 10, 13, 14, 15, 18} {
		block(i, false)
	}
	conv("19", w, 3, 3, true)
	return m
}

// fmap is a plain float64 feature map for the naive model below.
type fmap struct {
	c, h, w int
	v       []float64
}

func newFmap(c, h, w int) *fmap { return &fmap{c, h, w, make([]float64, c*h*w)} }

func (f *fmap) at(c, y, x int) float64 {
	if y < 0 || y >= f.h || x < 0 || x >= f.w {
		return 0
	}
	return f.v[(c*f.h+y)*f.w+x]
}

func (f *fmap) apply(fn func(float64) float64) *fmap {
	o := newFmap(f.c, f.h, f.w)
	for i, v := range f.v {
		o.v[i] = fn(v)
	}
	return o
}

func (f *fmap) add(g *fmap) *fmap {
	o := newFmap(f.c, f.h, f.w)
	for i := range f.v {
		o.v[i] = f.v[i] + g.v[i]
	}
	return o
}

func relu(v float64) float64 { return math.Max(v, 0) }

// naiveConv is a direct convolution with padding k/2.
func naiveConv(m tensor.MapSource, name string, x *fmap, stride int) *fmap {
	wt := m[name+".weight"]
	o, k := wt.Shape[0], wt.Shape[2]
	ws := wt.Float32s()
	p := k / 2
	ho, wo := (x.h+2*p-k)/stride+1, (x.w+2*p-k)/stride+1
	y := newFmap(o, ho, wo)
	for oc := 0; oc < o; oc++ {
		var b float64
		if bt, ok := m[name+".bias"]; ok {
			b = float64(bt.Float32s()[oc])
		}
		for oy := 0; oy < ho; oy++ {
			for ox := 0; ox < wo; ox++ {
				s := b
				for ic := 0; ic < x.c; ic++ {
					for ky := 0; ky < k; ky++ {
						for kx := 0; kx < k; kx++ {
							s += x.at(ic, oy*stride+ky-p, ox*stride+kx-p) * float64(ws[((oc*x.c+ic)*k+ky)*k+kx])
						}
					}
				}
				y.v[(oc*ho+oy)*wo+ox] = s
			}
		}
	}
	return y
}

func naiveBlock(m tensor.MapSource, i int, x *fmap) *fmap {
	pre := fmt.Sprint(i)
	if _, ok := m[pre+".pool.0.weight"]; ok {
		p := naiveConv(m, pre+".pool.0", x, 1)
		g, b := m[pre+".pool.1.weight"].Float32s(), m[pre+".pool.1.bias"].Float32s()
		cg := p.c / 4
		n := cg * p.h * p.w
		for gi := range 4 {
			seg := p.v[gi*n : (gi+1)*n]
			var mean, vr float64
			for _, v := range seg {
				mean += v
			}
			mean /= float64(n)
			for _, v := range seg {
				vr += (v - mean) * (v - mean)
			}
			vr /= float64(n)
			for j := range seg {
				ch := gi*cg + j/(p.h*p.w)
				seg[j] = relu((seg[j]-mean)/math.Sqrt(vr+1e-5)*float64(g[ch]) + float64(b[ch]))
			}
		}
		x = x.add(naiveConv(m, pre+".pool.3", p, 1))
	}
	h := naiveConv(m, pre+".conv.0", x, 1).apply(relu)
	h = naiveConv(m, pre+".conv.2", h, 1).apply(relu)
	h = naiveConv(m, pre+".conv.4", h, 1)
	return h.add(x).apply(relu)
}

func naiveUp(x *fmap) *fmap {
	y := newFmap(x.c, 2*x.h, 2*x.w)
	for c := 0; c < x.c; c++ {
		for yy := 0; yy < y.h; yy++ {
			for xx := 0; xx < y.w; xx++ {
				y.v[(c*y.h+yy)*y.w+xx] = x.at(c, yy/2, xx/2)
			}
		}
	}
	return y
}

// naiveTiny runs the TAESD layout written out module by module.
func naiveTiny(m tensor.MapSource, role TinyRole, x *fmap) *fmap {
	if role == TinyEncoder {
		x = naiveConv(m, "0", x, 1)
		x = naiveBlock(m, 1, x)
		for _, i := range []int{2, 6, 10} {
			x = naiveConv(m, fmt.Sprint(i), x, 2)
			for j := 1; j <= 3; j++ {
				x = naiveBlock(m, i+j, x)
			}
		}
		return naiveConv(m, "14", x, 1)
	}
	x = x.apply(func(v float64) float64 { return 3 * math.Tanh(v/3) })
	x = naiveConv(m, "1", x, 1).apply(relu)
	for i := 3; i <= 18; i++ {
		switch i {
		case 6, 11, 16:
			x = naiveConv(m, fmt.Sprint(i+1), naiveUp(x), 1)
			i++
		default:
			x = naiveBlock(m, i, x)
		}
	}
	return naiveConv(m, "19", x, 1)
}

func randFmap(c, h, w int, scale float64, seed uint64) *fmap {
	r := rand.New(rand.NewPCG(seed, 2))
	f := newFmap(c, h, w)
	for i := range f.v {
		f.v[i] = r.Float64() * scale
	}
	return f
}

func toTensor(f *fmap) *tensor.Tensor {
	t := tensor.New(1, f.c, f.h, f.w)
	for i, v := range f.v {
		t.F32[i] = float32(v)
	}
	return t
}

// TestTinyMatchesNaive compares Tiny on the reference backend with a plain
// float64 transcription of the TAESD layout, on random weights of width 4.
func TestTinyMatchesNaive(t *testing.T) {
	for _, c := range []struct {
		role  TinyRole
		pool  bool
		in    *fmap
		out   []int
		latCh int
	}{
		{TinyEncoder, false, randFmap(3, 16, 24, 1, 1), []int{1, 4, 2, 3}, 4},
		{TinyEncoder, true, randFmap(3, 16, 16, 1, 2), []int{1, 32, 2, 2}, 32},
		{TinyDecoder, false, randFmap(4, 2, 3, 8, 3), []int{1, 3, 16, 24}, 4}, // values up to 8 exercise the clamp
		{TinyDecoder, true, randFmap(32, 2, 2, 8, 4), []int{1, 3, 16, 16}, 32},
	} {
		name := fmt.Sprintf("%v/c%d/pool=%v", c.role, c.latCh, c.pool)
		t.Run(name, func(t *testing.T) {
			src := tinySource(c.role, 4, c.latCh, c.pool, uint64(c.latCh))
			m, err := LoadTiny(src, "")
			if err != nil {
				t.Fatal(err)
			}
			if m.Role != c.role || m.LatentChannels != c.latCh || m.Width != 4 || m.HasPool() != c.pool {
				t.Fatalf("loaded %v C=%d W=%d pool=%v", m.Role, m.LatentChannels, m.Width, m.HasPool())
			}
			y, err := m.Forward(context.Background(), tensor.NewRef(), toTensor(c.in))
			if err != nil {
				t.Fatal(err)
			}
			if !tensor.SameShape(y.Shape, c.out) {
				t.Fatalf("output %v, want %v", y.Shape, c.out)
			}
			want := naiveTiny(src, c.role, c.in)
			var maxAbs, maxErr float64
			for i, v := range want.v {
				maxAbs = math.Max(maxAbs, math.Abs(v))
				maxErr = math.Max(maxErr, math.Abs(float64(y.F32[i])-v))
			}
			// f32 activations between layers: errors stay near 1e-6 of the scale.
			if maxAbs == 0 || maxErr > 1e-4*maxAbs {
				t.Errorf("max error %.3g against max |value| %.3g", maxErr, maxAbs)
			}
		})
	}
}

func TestTinyF16Weights(t *testing.T) {
	src := tinySource(TinyDecoder, 4, 4, true, 9)
	half := tensor.MapSource{}
	for n, w := range src {
		h := make([]uint16, len(w.F32))
		for i, v := range w.F32 {
			h[i] = tensor.F32ToF16(v)
			w.F32[i] = tensor.F16ToF32(h[i]) // the f32 model gets the same rounded values
		}
		half[n] = tensor.FromHalf(h, tensor.F16, w.Shape...)
	}
	a, err := LoadTiny(src, "")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadTiny(half, "")
	if err != nil {
		t.Fatal(err)
	}
	x := toTensor(randFmap(4, 1, 2, 3, 5))
	ya, _ := a.Decode(context.Background(), tensor.NewRef(), x)
	yb, err := b.Decode(context.Background(), tensor.NewRef(), x)
	if err != nil {
		t.Fatal(err)
	}
	for i := range ya.F32 {
		if ya.F32[i] != yb.F32[i] {
			t.Fatalf("f16 weights give %v at %d, f32 copies give %v", yb.F32[i], i, ya.F32[i])
		}
	}
}

func TestTinyPrefix(t *testing.T) {
	src := tinySource(TinyDecoder, 4, 4, false, 1)
	both := tensor.MapSource{}
	for n, w := range src {
		both["decoder.layers."+n] = w
	}
	for n, w := range tinySource(TinyEncoder, 4, 4, false, 2) {
		both["encoder.layers."+n] = w
	}
	dec, err := LoadTiny(both, "decoder.layers.")
	if err != nil || dec.Role != TinyDecoder {
		t.Fatalf("decoder.layers.: %v %v", dec, err)
	}
	enc, err := LoadTiny(both, "encoder.layers.")
	if err != nil || enc.Role != TinyEncoder {
		t.Fatalf("encoder.layers.: %v %v", enc, err)
	}
}

func TestTinyLoadErrors(t *testing.T) {
	missing := tinySource(TinyEncoder, 4, 4, false, 1)
	delete(missing, "7.conv.2.bias")
	extra := tinySource(TinyDecoder, 4, 4, false, 1)
	extra["20.weight"] = tensor.New(3, 3, 1, 1)
	wrong := tinySource(TinyDecoder, 4, 4, false, 1)
	wrong["12.weight"] = tensor.New(4, 4, 1, 1)
	sana := tensor.MapSource{"0.weight": tensor.New(32, 3, 3, 3), "0.bias": tensor.New(32)} // 32x variant
	for _, c := range []struct {
		name string
		src  tensor.MapSource
		want string
	}{
		{"empty", tensor.MapSource{}, "no tiny autoencoder weights"},
		{"missing", missing, `"7.conv.2.bias"`},
		{"extra", extra, `unexpected tensors 20.weight`},
		{"wrong shape", wrong, `"12.weight" has shape [4 4 1 1]`},
		{"taesana", sana, "TAESANA"},
	} {
		_, err := LoadTiny(c.src, "")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %s", c.name, err, c.want)
		}
	}
}

func TestTinyInputErrors(t *testing.T) {
	enc, _ := LoadTiny(tinySource(TinyEncoder, 4, 4, false, 1), "")
	dec, _ := LoadTiny(tinySource(TinyDecoder, 4, 4, false, 1), "")
	ctx := context.Background()
	be := tensor.NewRef()
	if _, err := enc.Encode(ctx, be, tensor.New(1, 3, 12, 16)); err == nil || !strings.Contains(err.Error(), "multiples of 8") {
		t.Errorf("12-pixel-high image: %v", err)
	}
	if _, err := enc.Encode(ctx, be, tensor.New(1, 4, 8, 8)); err == nil {
		t.Error("4-channel image accepted")
	}
	if _, err := dec.Decode(ctx, be, tensor.New(1, 16, 2, 2)); err == nil || !strings.Contains(err.Error(), "[B, 4, h, w]") {
		t.Errorf("16-channel latent: %v", err)
	}
	if _, err := dec.Encode(ctx, be, tensor.New(1, 3, 8, 8)); err == nil {
		t.Error("Encode on a decoder accepted")
	}
	if _, err := enc.Decode(ctx, be, tensor.New(1, 4, 1, 1)); err == nil {
		t.Error("Decode on an encoder accepted")
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := enc.Encode(cancelled, be, tensor.New(1, 3, 8, 8)); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: %v", err)
	}
	// Round trip: halves must match, and images smaller than 8 pixels are refused.
	dec16, _ := LoadTiny(tinySource(TinyDecoder, 4, 16, false, 1), "")
	img := image.NewGray(image.Rect(0, 0, 16, 16))
	if _, _, err := RoundTrip(ctx, be, enc, dec16, img); err == nil || !strings.Contains(err.Error(), "latent channels") {
		t.Errorf("4- vs 16-channel halves: %v", err)
	}
	if _, _, err := RoundTrip(ctx, be, dec, enc, img); err == nil {
		t.Error("swapped halves accepted")
	}
	if _, _, err := RoundTrip(ctx, be, enc, dec, image.NewGray(image.Rect(0, 0, 7, 16))); err == nil {
		t.Error("7-pixel-wide image accepted")
	}
	// A 20x17 image is cropped to 16x16 from the top left.
	out, p, err := RoundTrip(ctx, be, enc, dec, image.NewGray(image.Rect(0, 0, 20, 17)))
	if err != nil || out.Bounds() != image.Rect(0, 0, 16, 16) || math.IsNaN(p) {
		t.Errorf("20x17 round trip: %v, %v, %v", out.Bounds(), p, err)
	}
}
