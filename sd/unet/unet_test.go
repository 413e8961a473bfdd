package unet

import (
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

// maxDiff returns the largest absolute difference and the largest |b|.
func maxDiff(a, b []float32) (diff, scale float64) {
	for i := range a {
		diff = math.Max(diff, math.Abs(float64(a[i])-float64(b[i])))
		scale = math.Max(scale, math.Abs(float64(b[i])))
	}
	return diff, scale
}

func loadTiny(t *testing.T, seed uint64, half, linear bool) *UNet {
	t.Helper()
	src := tinySource(tinyConfig(), seed, half, linear)
	u, err := Load(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestTimestepEmbedding(t *testing.T) {
	e := TimestepEmbedding([]float32{0, 999}, 8)
	if !tensor.SameShape(e.Shape, []int{2, 8}) {
		t.Fatalf("shape %v", e.Shape)
	}
	// t = 0: cos part 1, sin part 0.
	for i := 0; i < 4; i++ {
		if e.F32[i] != 1 || e.F32[4+i] != 0 {
			t.Fatalf("t=0 row %v", e.F32[:8])
		}
	}
	// t = 999, half = 4: frequencies 10000^(-i/4) = 1, 0.1, 0.01, 0.001.
	for i, f := range []float64{1, 0.1, 0.01, 0.001} {
		if c := float64(e.F32[8+i]); math.Abs(c-math.Cos(999*f)) > 2e-4 {
			t.Errorf("cos(999*%g) = %g, want %g", f, c, math.Cos(999*f))
		}
		if s := float64(e.F32[12+i]); math.Abs(s-math.Sin(999*f)) > 2e-4 {
			t.Errorf("sin(999*%g) = %g, want %g", f, s, math.Sin(999*f))
		}
	}
}

// TestUpsampleNearest checks the 2x-then-crop resize against the general
// nearest rule src = floor(dst * in / out) for both parities.
func TestUpsampleNearest(t *testing.T) {
	be := tensor.NewRef()
	for _, sz := range [][2]int{{5, 3}, {10, 7}, {1, 1}, {4, 6}} {
		h, w := sz[0], sz[1]
		x := randTensor(1, 2, 3, h, w)
		for _, oh := range []int{2 * h, 2*h - 1} {
			for _, ow := range []int{2 * w, 2*w - 1} {
				if oh < 1 || ow < 1 {
					continue
				}
				y := upsampleNearest(be, x, oh, ow)
				if !tensor.SameShape(y.Shape, []int{2, 3, oh, ow}) {
					t.Fatalf("shape %v, want [2 3 %d %d]", y.Shape, oh, ow)
				}
				for p := 0; p < 6; p++ {
					for i := 0; i < oh; i++ {
						for j := 0; j < ow; j++ {
							si, sj := i*h/oh, j*w/ow
							if got, want := y.F32[(p*oh+i)*ow+j], x.F32[(p*h+si)*w+sj]; got != want {
								t.Fatalf("%dx%d -> %dx%d at (%d,%d): %g, want %g", h, w, oh, ow, i, j, got, want)
							}
						}
					}
				}
			}
		}
	}
}

func TestInferConfig(t *testing.T) {
	for _, linear := range []bool{false, true} {
		cfg := tinyConfig()
		cfg.LinearProj = linear
		got, err := InferConfig(tinySource(cfg, 1, false, linear))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, cfg) {
			t.Errorf("inferred %+v\nwant     %+v", got, cfg)
		}
	}
	// A deeper, three-level variant with attention off at the last level.
	cfg := &Config{
		InChannels: 4, OutChannels: 4, ModelChannels: 32, ChannelMult: []int{1, 2, 2}, NumResBlocks: 2,
		Attention: []bool{true, true, false}, Depth: []int{2, 1, 1}, MidDepth: 1, ContextDim: 768,
		Heads: []int{8, 8, 8}, MidHeads: 8, Groups: 32,
	}
	got, err := InferConfig(tinySource(cfg, 1, false, false))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Errorf("inferred %+v\nwant     %+v", got, cfg)
	}
	// SD 2.x shapes (1024-wide context, linear projections): 64-wide heads.
	cfg = &Config{
		InChannels: 4, OutChannels: 4, ModelChannels: 64, ChannelMult: []int{1, 2}, NumResBlocks: 1,
		Attention: []bool{true, true}, Depth: []int{1, 1}, MidDepth: 1, ContextDim: 1024,
		Heads: []int{1, 2}, MidHeads: 2, LinearProj: true, Groups: 32,
	}
	got, err = InferConfig(tinySource(cfg, 1, false, true))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cfg) {
		t.Errorf("inferred %+v\nwant     %+v", got, cfg)
	}
}

// sd15JSON holds the fields of the diffusers SD 1.5 unet/config.json.
const sd15JSON = `{"_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
 "block_out_channels": [320, 640, 1280, 1280], "cross_attention_dim": 768,
 "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
 "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2, "norm_eps": 1e-05,
 "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}`

func TestParseConfig(t *testing.T) {
	got, err := ParseConfig([]byte(sd15JSON))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, SD15Config()) {
		t.Errorf("parsed %+v\nwant   %+v", got, SD15Config())
	}
	// SD 2.x: per-level head counts and linear projections.
	sd2 := strings.Replace(strings.Replace(sd15JSON, `"attention_head_dim": 8`, `"attention_head_dim": [5, 10, 20, 20], "use_linear_projection": true`, 1),
		`"cross_attention_dim": 768`, `"cross_attention_dim": 1024`, 1)
	got, err = ParseConfig([]byte(sd2))
	if err != nil {
		t.Fatal(err)
	}
	if !got.LinearProj || !reflect.DeepEqual(got.Heads, []int{5, 10, 20, 20}) || got.MidHeads != 20 || got.ContextDim != 1024 {
		t.Errorf("sd2 parsed %+v", got)
	}
	for _, bad := range []string{
		`{`,
		`{"_class_name": "AutoencoderKL"}`,
		strings.Replace(sd15JSON, `"attention_head_dim": 8`, `"attention_head_dim": [8, 8]`, 1),
		strings.Replace(sd15JSON, `"DownBlock2D"]`, `"Weird2D"]`, 1),
		strings.Replace(sd15JSON, `"in_channels": 4,`, `"addition_embed_type": "text_time", "in_channels": 4,`, 1),
		strings.Replace(sd15JSON, `[320, 640, 1280, 1280]`, `[320, 650, 1280, 1280]`, 1),
	} {
		if _, err := ParseConfig([]byte(bad)); err == nil {
			t.Errorf("no error for %.80s", bad)
		}
	}
	// The real diffusers configs, when the shared folder is present.
	for name, want := range map[string]func(*Config) bool{
		"sd15": func(c *Config) bool { return reflect.DeepEqual(c, SD15Config()) },
		"sd21": func(c *Config) bool { return c.LinearProj && c.ContextDim == 1024 && c.Heads[3] == 20 },
	} {
		path := "../../../shared/models/" + name + "/unet/config.json"
		if _, err := os.Stat(path); err != nil {
			continue
		}
		c, err := LoadConfigFile(path)
		if err != nil {
			t.Errorf("%s: %v", name, err)
		} else if !want(c) {
			t.Errorf("%s: parsed %+v", name, c)
		}
	}
}

// TestTinyForwardShapes runs the tiny model at even, mixed and odd latent
// sizes and checks output shapes and finiteness. It uses the native CPU
// backend for speed; TestTinyCPUMatchesRef ties that to the reference.
func TestTinyForwardShapes(t *testing.T) {
	u := loadTiny(t, 1, false, false)
	be := tensor.NewCPU()
	for _, sz := range [][2]int{{8, 8}, {40, 24}, {13, 7}, {1, 1}} {
		x := randTensor(2, 2, 4, sz[0], sz[1])
		ctx := randTensor(3, 2, 5, 64)
		y, err := u.Forward(be, x, []float32{999, 10.5}, ctx)
		if err != nil {
			t.Fatalf("%v: %v", sz, err)
		}
		if !tensor.SameShape(y.Shape, []int{2, 4, sz[0], sz[1]}) {
			t.Fatalf("%v: output shape %v", sz, y.Shape)
		}
		var ss float64
		for _, v := range y.F32 {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				t.Fatalf("%v: non-finite output", sz)
			}
			ss += float64(v) * float64(v)
		}
		if rms := math.Sqrt(ss / float64(len(y.F32))); rms < 1e-3 || rms > 1e3 {
			t.Errorf("%v: output rms %g out of range", sz, rms)
		}
	}
}

// TestTinyBatchIndependence: item b of a batch of two gives the same output
// as a batch of one, with its own timestep and context.
func TestTinyBatchIndependence(t *testing.T) {
	u := loadTiny(t, 2, false, false)
	be := tensor.NewRef()
	x := randTensor(4, 2, 4, 6, 10)
	ctx := randTensor(5, 2, 3, 64)
	ts := []float32{999, 0}
	y, err := u.Forward(be, x, ts, ctx)
	if err != nil {
		t.Fatal(err)
	}
	n, nc := x.Numel()/2, ctx.Numel()/2
	for b := 0; b < 2; b++ {
		xb := tensor.FromF32(x.F32[b*n:(b+1)*n], 1, 4, 6, 10)
		cb := tensor.FromF32(ctx.F32[b*nc:(b+1)*nc], 1, 3, 64)
		yb, err := u.Forward(be, xb, ts[b:b+1], cb)
		if err != nil {
			t.Fatal(err)
		}
		if d, s := maxDiff(yb.F32, y.F32[b*n:(b+1)*n]); d > 1e-5*s {
			t.Errorf("item %d: max diff %g (scale %g)", b, d, s)
		}
	}
	// Different timesteps and contexts must matter.
	if d, _ := maxDiff(y.F32[:n], y.F32[n:]); d < 1e-3 {
		t.Errorf("both batch items give the same output (diff %g)", d)
	}
}

// TestTinyLinearProjEqualsConv: SD 2.x linear proj_in/proj_out with the
// same numbers as SD 1.x 1x1 convolutions give the same output.
func TestTinyLinearProjEqualsConv(t *testing.T) {
	cfg := tinyConfig()
	src := tinySource(cfg, 3, false, false)
	lin := tensor.MapSource{}
	for name, v := range src {
		if (strings.HasSuffix(name, ".proj_in.weight") || strings.HasSuffix(name, ".proj_out.weight")) && len(v.Shape) == 4 {
			v = v.Reshape(v.Shape[0], v.Shape[1])
		}
		lin[name] = v
	}
	uc, err := Load(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	ul, err := Load(lin, nil)
	if err != nil {
		t.Fatal(err)
	}
	if uc.Config.LinearProj || !ul.Config.LinearProj {
		t.Fatalf("inferred LinearProj %v / %v", uc.Config.LinearProj, ul.Config.LinearProj)
	}
	be := tensor.NewRef()
	x, ctx := randTensor(6, 1, 4, 5, 4), randTensor(7, 1, 2, 64)
	yc, err := uc.Forward(be, x, []float32{500}, ctx)
	if err != nil {
		t.Fatal(err)
	}
	yl, err := ul.Forward(be, x, []float32{500}, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := maxDiff(yc.F32, yl.F32); d != 0 {
		t.Errorf("linear and conv projections differ by %g", d)
	}
}

// TestTinyF16Weights: f16 weights give the f32 result of the same rounded values.
func TestTinyF16Weights(t *testing.T) {
	cfg := tinyConfig()
	h := tinySource(cfg, 4, true, false)
	f := tensor.MapSource{}
	for name, v := range h {
		f[name] = v.ToF32()
	}
	uh, err := Load(h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	uf, err := Load(f, cfg)
	if err != nil {
		t.Fatal(err)
	}
	be := tensor.NewRef()
	x, ctx := randTensor(8, 1, 4, 4, 4), randTensor(9, 1, 2, 64)
	yh, err := uh.Forward(be, x, []float32{1}, ctx)
	if err != nil {
		t.Fatal(err)
	}
	yf, err := uf.Forward(be, x, []float32{1}, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d, s := maxDiff(yh.F32, yf.F32); d > 1e-6*s {
		t.Errorf("f16 vs f32 weights differ by %g (scale %g)", d, s)
	}
}

func TestLoadErrors(t *testing.T) {
	cfg := tinyConfig()
	src := tinySource(cfg, 1, false, false)
	missing := tensor.MapSource{}
	for k, v := range src {
		if k != Prefix+"output_blocks.1.0.emb_layers.1.weight" {
			missing[k] = v
		}
	}
	if _, err := Load(missing, cfg); err == nil || !strings.Contains(err.Error(), "output_blocks.1.0.emb_layers.1.weight") {
		t.Errorf("missing tensor: %v", err)
	}
	extra := tensor.MapSource{Prefix + "input_blocks.9.0.in_layers.0.weight": tensor.New(32)}
	for k, v := range src {
		extra[k] = v
	}
	if _, err := Load(extra, cfg); err == nil || !strings.Contains(err.Error(), "input_blocks.9") {
		t.Errorf("unused tensor: %v", err)
	}
	wrong := *cfg
	wrong.ContextDim = 32
	if _, err := Load(src, &wrong); err == nil || !strings.Contains(err.Error(), "attn2.to_k") {
		t.Errorf("wrong context dim: %v", err)
	}
	bad := *cfg
	bad.Heads = []int{8}
	if _, err := Load(src, &bad); err == nil {
		t.Error("inconsistent config accepted")
	}
	if _, err := Load(tensor.MapSource{}, nil); err == nil {
		t.Error("empty source accepted")
	}
}

func TestForwardErrors(t *testing.T) {
	u := loadTiny(t, 1, false, false)
	be := tensor.NewRef()
	x, ctx := randTensor(1, 1, 4, 4, 4), randTensor(1, 1, 2, 64)
	cases := map[string]func() error{
		"channels": func() error { _, err := u.Forward(be, randTensor(1, 1, 3, 4, 4), []float32{1}, ctx); return err },
		"rank":     func() error { _, err := u.Forward(be, randTensor(1, 4, 4, 4), []float32{1}, ctx); return err },
		"nil x":    func() error { _, err := u.Forward(be, nil, []float32{1}, ctx); return err },
		"steps":    func() error { _, err := u.Forward(be, x, []float32{1, 2}, ctx); return err },
		"nan step": func() error { _, err := u.Forward(be, x, []float32{float32(math.NaN())}, ctx); return err },
		"ctx dim":  func() error { _, err := u.Forward(be, x, []float32{1}, randTensor(1, 1, 2, 32)); return err },
		"ctx batch": func() error {
			_, err := u.Forward(be, x, []float32{1}, randTensor(1, 2, 2, 64))
			return err
		},
		"nil ctx": func() error { _, err := u.Forward(be, x, []float32{1}, nil); return err },
	}
	for name, f := range cases {
		if err := f(); err == nil || !strings.HasPrefix(err.Error(), "unet") {
			t.Errorf("%s: error %v", name, err)
		}
	}
}

// TestTinyCPUMatchesRef runs the tiny model (f16 weights, odd latent size,
// batch of two) on the native CPU backend and the float64-accumulating
// reference, and bounds their difference. The tolerance allows float32
// accumulation and the CPU backend's fast exp/erf across ~40 layers;
// a kernel or layout bug gives differences of order 1.
func TestTinyCPUMatchesRef(t *testing.T) {
	u := loadTiny(t, 5, true, false)
	x, ctx := randTensor(10, 2, 4, 9, 14), randTensor(11, 2, 7, 64)
	ts := []float32{999, 3.5}
	want, err := u.Forward(tensor.NewRef(), x, ts, ctx)
	if err != nil {
		t.Fatal(err)
	}
	cpu := tensor.NewCPU()
	got, err := u.Forward(cpu, x, ts, ctx)
	if err != nil {
		t.Fatal(err)
	}
	d, s := maxDiff(got.F32, want.F32)
	t.Logf("%s vs ref: max abs diff %.3g, max |ref| %.3g", cpu.Name(), d, s)
	if d > 1e-4*s {
		t.Errorf("%s differs from ref by %.3g (scale %.3g)", cpu.Name(), d, s)
	}
}
