package vae

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

// klTinyConfig is the tiny test autoencoder shared with the test-model
// generator: ch 32, ch_mult [1 2] (so 2x downscaling), one residual block
// per encoder level, 4 latent channels, 32 groups.
func klTinyConfig() *KLConfig {
	return &KLConfig{InChannels: 3, OutChannels: 3, Ch: 32, ChMult: []int{1, 2}, NumResBlocks: 1, ZChannels: 4,
		Groups: 32, ScalingFactor: KLScalingSD1}
}

// klGen writes random autoencoder tensors in the ldm layout.
type klGen struct {
	src    tensor.MapSource
	rng    *rand.Rand
	prefix string
}

func (g *klGen) put(name string, std, mean float64, shape ...int) {
	v := make([]float32, tensor.Numel(shape))
	for i := range v {
		v[i] = float32(mean + std*g.rng.NormFloat64())
	}
	g.src[g.prefix+name] = tensor.FromF32(v, shape...)
}

func (g *klGen) conv(p string, in, out, k int) {
	g.put(p+".weight", 1/math.Sqrt(float64(in*k*k)), 0, out, in, k, k)
	g.put(p+".bias", 0.1, 0, out)
}

func (g *klGen) norm(p string, c int) {
	g.put(p+".weight", 0.1, 1, c)
	g.put(p+".bias", 0.1, 0, c)
}

func (g *klGen) res(p string, in, out int) {
	g.norm(p+".norm1", in)
	g.conv(p+".conv1", in, out, 3)
	g.norm(p+".norm2", out)
	g.conv(p+".conv2", out, out, 3)
	if in != out {
		g.conv(p+".nin_shortcut", in, out, 1)
	}
}

func (g *klGen) attn(p string, c int) {
	g.norm(p+".norm", c)
	for _, n := range []string{".q", ".k", ".v", ".proj_out"} {
		g.conv(p+n, c, c, 1)
	}
}

// klTinySource returns random weights for c in the layout of ldm's
// AutoencoderKL (encoder, decoder, quant_conv, post_quant_conv).
func klTinySource(c *KLConfig, seed uint64, prefix string) tensor.MapSource {
	g := &klGen{src: tensor.MapSource{}, rng: rand.New(rand.NewPCG(seed, 3)), prefix: prefix}
	g.conv("encoder.conv_in", c.InChannels, c.Ch, 3)
	in := c.Ch
	for i, m := range c.ChMult {
		for b := 0; b < c.NumResBlocks; b++ {
			g.res(fmt.Sprintf("encoder.down.%d.block.%d", i, b), in, m*c.Ch)
			in = m * c.Ch
		}
		if i != len(c.ChMult)-1 {
			g.conv(fmt.Sprintf("encoder.down.%d.downsample.conv", i), in, in, 3)
		}
	}
	g.res("encoder.mid.block_1", in, in)
	g.attn("encoder.mid.attn_1", in)
	g.res("encoder.mid.block_2", in, in)
	g.norm("encoder.norm_out", in)
	g.conv("encoder.conv_out", in, 2*c.ZChannels, 3)
	g.conv("decoder.conv_in", c.ZChannels, in, 3)
	g.res("decoder.mid.block_1", in, in)
	g.attn("decoder.mid.attn_1", in)
	g.res("decoder.mid.block_2", in, in)
	for i := len(c.ChMult) - 1; i >= 0; i-- {
		for b := 0; b <= c.NumResBlocks; b++ {
			g.res(fmt.Sprintf("decoder.up.%d.block.%d", i, b), in, c.ChMult[i]*c.Ch)
			in = c.ChMult[i] * c.Ch
		}
		if i != 0 {
			g.conv(fmt.Sprintf("decoder.up.%d.upsample.conv", i), in, in, 3)
		}
	}
	g.norm("decoder.norm_out", in)
	g.conv("decoder.conv_out", in, c.OutChannels, 3)
	g.conv("quant_conv", 2*c.ZChannels, 2*c.ZChannels, 1)
	g.conv("post_quant_conv", c.ZChannels, c.ZChannels, 1)
	return g.src
}

func klRand(seed uint64, shape ...int) *tensor.Tensor {
	r := rand.New(rand.NewPCG(seed, 5))
	t := tensor.New(shape...)
	for i := range t.F32 {
		t.F32[i] = float32(r.NormFloat64())
	}
	return t
}

func klMaxDiff(a, b []float32) (diff, scale float64) {
	for i := range a {
		diff = math.Max(diff, math.Abs(float64(a[i])-float64(b[i])))
		scale = math.Max(scale, math.Abs(float64(b[i])))
	}
	return diff, scale
}

func klLoadTiny(t *testing.T, seed uint64) *KL {
	t.Helper()
	m, err := LoadKL(klTinySource(klTinyConfig(), seed, KLPrefix), nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestKLInferConfig(t *testing.T) {
	for _, prefix := range []string{KLPrefix, ""} {
		got, err := InferKLConfig(klTinySource(klTinyConfig(), 1, prefix))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, klTinyConfig()) {
			t.Errorf("prefix %q: inferred %+v, want %+v", prefix, got, klTinyConfig())
		}
	}
	c := &KLConfig{InChannels: 3, OutChannels: 3, Ch: 32, ChMult: []int{1, 2, 4, 4}, NumResBlocks: 2, ZChannels: 4,
		Groups: 32, ScalingFactor: KLScalingSD1}
	got, err := InferKLConfig(klTinySource(c, 1, KLPrefix))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, c) {
		t.Errorf("inferred %+v, want %+v", got, c)
	}
}

const klSD15JSON = `{"_class_name": "AutoencoderKL", "act_fn": "silu", "block_out_channels": [128, 256, 512, 512],
 "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
 "in_channels": 3, "latent_channels": 4, "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3,
 "sample_size": 512, "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}`

func TestKLParseConfig(t *testing.T) {
	got, err := ParseKLConfig([]byte(klSD15JSON))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, KLSD15Config()) || got.Factor() != 8 {
		t.Errorf("parsed %+v, want %+v", got, KLSD15Config())
	}
	sdxl := strings.Replace(klSD15JSON, `"in_channels": 3`, `"scaling_factor": 0.13025, "in_channels": 3`, 1)
	if got, err := ParseKLConfig([]byte(sdxl)); err != nil || got.ScalingFactor != 0.13025 {
		t.Errorf("scaling_factor: %+v, %v", got, err)
	}
	for _, bad := range []string{
		`[`,
		`{"_class_name": "UNet2DConditionModel"}`,
		strings.Replace(klSD15JSON, `[128, 256, 512, 512]`, `[128, 200, 512, 512]`, 1),
		strings.Replace(klSD15JSON, `"in_channels": 3`, `"shift_factor": 0.1159, "in_channels": 3`, 1),
		strings.Replace(klSD15JSON, `"layers_per_block": 2`, `"layers_per_block": 0`, 1),
		strings.Replace(klSD15JSON, `"in_channels": 3`, `"scaling_factor": -1, "in_channels": 3`, 1),
	} {
		if _, err := ParseKLConfig([]byte(bad)); err == nil {
			t.Errorf("no error for %.80s", bad)
		}
	}
	if path := "../../../shared/models/sd15/vae/config.json"; fileExists(path) {
		c, err := LoadKLConfigFile(path)
		if err != nil || !reflect.DeepEqual(c, KLSD15Config()) {
			t.Errorf("%s: %+v, %v", path, c, err)
		}
	}
}

func fileExists(path string) bool { _, err := os.Stat(path); return err == nil }

// TestKLTinyShapes decodes and encodes the tiny model at even and odd sizes.
func TestKLTinyShapes(t *testing.T) {
	m := klLoadTiny(t, 1)
	be := tensor.NewRef()
	for _, sz := range [][2]int{{4, 4}, {5, 3}, {1, 7}} {
		img, err := m.Decode(be, klRand(2, 2, 4, sz[0], sz[1]))
		if err != nil {
			t.Fatalf("%v: %v", sz, err)
		}
		if !tensor.SameShape(img.Shape, []int{2, 3, 2 * sz[0], 2 * sz[1]}) {
			t.Fatalf("%v: decoded shape %v", sz, img.Shape)
		}
		checkFinite(t, img)
		mean, logvar, err := m.Encode(be, img)
		if err != nil {
			t.Fatalf("%v: %v", sz, err)
		}
		for _, r := range []*tensor.Tensor{mean, logvar} {
			if !tensor.SameShape(r.Shape, []int{2, 4, sz[0], sz[1]}) {
				t.Fatalf("%v: encoded shape %v", sz, r.Shape)
			}
			checkFinite(t, r)
		}
	}
}

func checkFinite(t *testing.T, x *tensor.Tensor) {
	t.Helper()
	var ss float64
	for _, v := range x.F32 {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("non-finite value in %v", x)
		}
		ss += float64(v) * float64(v)
	}
	if rms := math.Sqrt(ss / float64(len(x.F32))); rms < 1e-3 || rms > 1e3 {
		t.Errorf("rms %g of %v out of range", rms, x)
	}
}

// TestKLBatchIndependence: each item of a batch decodes (and encodes) as it
// would alone.
func TestKLBatchIndependence(t *testing.T) {
	m := klLoadTiny(t, 2)
	be := tensor.NewRef()
	z := klRand(3, 2, 4, 3, 5)
	img, err := m.Decode(be, z)
	if err != nil {
		t.Fatal(err)
	}
	mean, _, err := m.Encode(be, img)
	if err != nil {
		t.Fatal(err)
	}
	nz, ni := z.Numel()/2, img.Numel()/2
	for b := 0; b < 2; b++ {
		one, err := m.Decode(be, tensor.FromF32(z.F32[b*nz:(b+1)*nz], 1, 4, 3, 5))
		if err != nil {
			t.Fatal(err)
		}
		if d, s := klMaxDiff(one.F32, img.F32[b*ni:(b+1)*ni]); d > 1e-5*s {
			t.Errorf("decode item %d: diff %g (scale %g)", b, d, s)
		}
		mo, _, err := m.Encode(be, tensor.FromF32(img.F32[b*ni:(b+1)*ni], 1, 3, 6, 10))
		if err != nil {
			t.Fatal(err)
		}
		if d, s := klMaxDiff(mo.F32, mean.F32[b*nz:(b+1)*nz]); d > 1e-5*s {
			t.Errorf("encode item %d: diff %g (scale %g)", b, d, s)
		}
	}
	if d, _ := klMaxDiff(img.F32[:ni], img.F32[ni:]); d < 1e-3 {
		t.Errorf("both items decode alike (diff %g)", d)
	}
}

// TestKLEncodeMoments: the first z channels after quant_conv are the mean,
// the last z the log-variance, clamped to [-30, 20].
func TestKLEncodeMoments(t *testing.T) {
	src := klTinySource(klTinyConfig(), 4, KLPrefix)
	// quant_conv = identity on the mean half, a constant on the logvar half.
	w := tensor.New(8, 8, 1, 1)
	for i := 0; i < 4; i++ {
		w.F32[i*8+i] = 1
	}
	bias := tensor.FromF32([]float32{0, 0, 0, 0, 100, -100, 5, -5}, 8)
	src[KLPrefix+"quant_conv.weight"], src[KLPrefix+"quant_conv.bias"] = w, bias
	m, err := LoadKL(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	be := tensor.NewRef()
	x := klRand(5, 1, 3, 4, 6)
	mean, logvar, err := m.Encode(be, x)
	if err != nil {
		t.Fatal(err)
	}
	raw := m.Encoder.forward(be, x) // [1, 8, 2, 3]
	if d, _ := klMaxDiff(mean.F32, raw.F32[:4*6]); d != 0 {
		t.Errorf("mean differs from the first 4 encoder channels by %g", d)
	}
	for c, want := range []float32{20, -30, 5, -5} {
		for _, v := range logvar.F32[c*6 : (c+1)*6] {
			if v != want {
				t.Fatalf("logvar channel %d = %g, want %g", c, v, want)
			}
		}
	}
}

func TestKLErrors(t *testing.T) {
	c := klTinyConfig()
	src := klTinySource(c, 1, KLPrefix)
	m, err := LoadKL(src, c)
	if err != nil {
		t.Fatal(err)
	}
	be := tensor.NewRef()
	if _, err := m.Decode(be, klRand(1, 1, 3, 4, 4)); err == nil {
		t.Error("decode of 3-channel latents accepted")
	}
	if _, err := m.Decode(be, nil); err == nil {
		t.Error("decode of nil accepted")
	}
	if _, _, err := m.Encode(be, klRand(1, 1, 3, 5, 4)); err == nil {
		t.Error("encode of odd-sized image accepted")
	}
	if _, _, err := m.Encode(be, klRand(1, 1, 4, 4, 4)); err == nil {
		t.Error("encode of 4-channel image accepted")
	}
	// Decoder-only weights: Encode reports the missing encoder.
	dec := tensor.MapSource{}
	for k, v := range src {
		if !strings.HasPrefix(k, KLPrefix+"encoder.") && k != KLPrefix+"quant_conv.weight" && k != KLPrefix+"quant_conv.bias" {
			dec[k] = v
		}
	}
	md, err := LoadKL(dec, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := md.Encode(be, klRand(1, 1, 3, 4, 4)); err == nil || !strings.Contains(err.Error(), "encoder") {
		t.Errorf("decoder-only encode: %v", err)
	}
	// A missing decoder tensor, an unused one, a wrong config.
	miss := tensor.MapSource{}
	for k, v := range src {
		if k != KLPrefix+"decoder.up.1.block.1.norm2.bias" {
			miss[k] = v
		}
	}
	if _, err := LoadKL(miss, c); err == nil || !strings.Contains(err.Error(), "decoder.up.1.block.1.norm2.bias") {
		t.Errorf("missing tensor: %v", err)
	}
	src[KLPrefix+"decoder.up.5.block.0.conv1.weight"] = tensor.New(1)
	src[KLPrefix+"loss.logvar"] = tensor.New(1)
	if _, err := LoadKL(src, c); err == nil || !strings.Contains(err.Error(), "decoder.up.5") {
		t.Errorf("unused tensor: %v", err)
	}
	delete(src, KLPrefix+"decoder.up.5.block.0.conv1.weight")
	if _, err := LoadKL(src, c); err != nil {
		t.Errorf("loss.* tensors should be ignored: %v", err)
	}
	wrong := *c
	wrong.ZChannels = 8
	if _, err := LoadKL(src, &wrong); err == nil {
		t.Error("wrong z channels accepted")
	}
	if _, err := LoadKL(tensor.MapSource{}, nil); err == nil {
		t.Error("empty source accepted")
	}
}

// TestKLTinyCPUMatchesRef decodes and encodes with the native CPU backend
// and the float64-accumulating reference and bounds their difference
// (float32 accumulation over ~20 layers; a kernel bug gives order-1 errors).
func TestKLTinyCPUMatchesRef(t *testing.T) {
	m := klLoadTiny(t, 6)
	ref, cpu := tensor.NewRef(), tensor.NewCPU()
	z := klRand(7, 2, 4, 7, 5)
	want, err := m.Decode(ref, z)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Decode(cpu, z)
	if err != nil {
		t.Fatal(err)
	}
	d, s := klMaxDiff(got.F32, want.F32)
	t.Logf("decode %s vs ref: max abs diff %.3g, max |ref| %.3g", cpu.Name(), d, s)
	if d > 1e-4*s {
		t.Errorf("decode: %s differs from ref by %.3g (scale %.3g)", cpu.Name(), d, s)
	}
	wm, wl, err := m.Encode(ref, want)
	if err != nil {
		t.Fatal(err)
	}
	gm, gl, err := m.Encode(cpu, want)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range [][2]*tensor.Tensor{{gm, wm}, {gl, wl}} {
		d, s := klMaxDiff(p[0].F32, p[1].F32)
		if d > 1e-4*s {
			t.Errorf("encode output %d: %s differs from ref by %.3g (scale %.3g)", i, cpu.Name(), d, s)
		}
	}
}
