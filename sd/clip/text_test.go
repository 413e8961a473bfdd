package clip

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

// tinyConfig is a small CLIP with SD 1.x's vocabulary and context length.
func tinyConfig() Config {
	return Config{Hidden: 64, Layers: 2, Heads: 1, FF: 256, Vocab: 49408, MaxPos: 77,
		Act: tensor.QuickGELU, Eps: 1e-5}
}

// tinySource makes random weights for c under Prefix. Matrices are stored
// as F16 (as in real checkpoints), norms as F32, and a float position_ids
// buffer is included to show it is ignored.
func tinySource(c Config, seed uint64) tensor.MapSource {
	r := rand.New(rand.NewPCG(seed, 1))
	src := tensor.MapSource{}
	half := func(name string, std float64, shape ...int) {
		h := make([]uint16, tensor.Numel(shape))
		for i := range h {
			h[i] = tensor.F32ToF16(float32(r.NormFloat64() * std))
		}
		src[Prefix+name] = tensor.FromHalf(h, tensor.F16, shape...)
	}
	full := func(name string, mean, std float64, shape ...int) {
		f := make([]float32, tensor.Numel(shape))
		for i := range f {
			f[i] = float32(mean + r.NormFloat64()*std)
		}
		src[Prefix+name] = tensor.FromF32(f, shape...)
	}
	half("embeddings.token_embedding.weight", 0.5, c.Vocab, c.Hidden)
	half("embeddings.position_embedding.weight", 0.5, c.MaxPos, c.Hidden)
	ids := make([]float32, c.MaxPos)
	for i := range ids {
		ids[i] = float32(c.MaxPos - 1 - i) // deliberately wrong: must be ignored
	}
	src[Prefix+"embeddings.position_ids"] = tensor.FromF32(ids, 1, c.MaxPos)
	ln := func(name string) {
		full(name+".weight", 1, 0.1, c.Hidden)
		full(name+".bias", 0, 0.1, c.Hidden)
	}
	lin := func(name string, in, out int) {
		half(name+".weight", 1/math.Sqrt(float64(in)), out, in)
		full(name+".bias", 0, 0.1, out)
	}
	for i := 0; i < c.Layers; i++ {
		p := fmt.Sprintf("encoder.layers.%d.", i)
		ln(p + "layer_norm1")
		ln(p + "layer_norm2")
		for _, n := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
			lin(p+"self_attn."+n, c.Hidden, c.Hidden)
		}
		lin(p+"mlp.fc1", c.Hidden, c.FF)
		lin(p+"mlp.fc2", c.FF, c.Hidden)
	}
	ln("final_layer_norm")
	return src
}

// naiveEncode is a plain float64 transcription of CLIPTextModel's forward
// pass for one sequence, written independently of the backends: it returns
// [L*Hidden] after the first nLayers layers and the final layer norm.
func naiveEncode(src tensor.MapSource, c Config, ids []int, nLayers int) []float64 {
	w := func(name string) []float32 { return src[Prefix+name].Float32s() }
	d, L := c.Hidden, len(ids)
	x := make([][]float64, L)
	tok, pos := w("embeddings.token_embedding.weight"), w("embeddings.position_embedding.weight")
	for i, id := range ids {
		x[i] = make([]float64, d)
		for j := range x[i] {
			x[i][j] = float64(tok[id*d+j]) + float64(pos[i*d+j])
		}
	}
	norm := func(v []float64, name string) []float64 {
		g, b := w(name+".weight"), w(name+".bias")
		var mean, vr float64
		for _, e := range v {
			mean += e
		}
		mean /= float64(len(v))
		for _, e := range v {
			vr += (e - mean) * (e - mean)
		}
		vr /= float64(len(v))
		out := make([]float64, len(v))
		for j, e := range v {
			out[j] = (e-mean)/math.Sqrt(vr+float64(c.Eps))*float64(g[j]) + float64(b[j])
		}
		return out
	}
	linear := func(v []float64, name string) []float64 {
		wt, b := w(name+".weight"), w(name+".bias")
		out := make([]float64, len(b))
		for o := range out {
			s := float64(b[o])
			for k, e := range v {
				s += float64(wt[o*len(v)+k]) * e
			}
			out[o] = s
		}
		return out
	}
	hd := d / c.Heads
	for li := 0; li < nLayers; li++ {
		p := fmt.Sprintf("encoder.layers.%d.", li)
		q, k, v := make([][]float64, L), make([][]float64, L), make([][]float64, L)
		for i := range x {
			h := norm(x[i], p+"layer_norm1")
			q[i], k[i], v[i] = linear(h, p+"self_attn.q_proj"), linear(h, p+"self_attn.k_proj"), linear(h, p+"self_attn.v_proj")
		}
		for i := range x {
			att := make([]float64, d)
			for h := 0; h < c.Heads; h++ {
				sc := make([]float64, i+1) // causal: keys 0..i
				mx := math.Inf(-1)
				for j := 0; j <= i; j++ {
					for t := h * hd; t < (h+1)*hd; t++ {
						sc[j] += q[i][t] * k[j][t]
					}
					sc[j] /= math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for j := range sc {
					sc[j] = math.Exp(sc[j] - mx)
					sum += sc[j]
				}
				for j := range sc {
					for t := h * hd; t < (h+1)*hd; t++ {
						att[t] += sc[j] / sum * v[j][t]
					}
				}
			}
			o := linear(att, p+"self_attn.out_proj")
			for j := range x[i] {
				x[i][j] += o[j]
			}
		}
		for i := range x {
			h := linear(norm(x[i], p+"layer_norm2"), p+"mlp.fc1")
			for j, e := range h {
				h[j] = e / (1 + math.Exp(-1.702*e))
			}
			o := linear(h, p+"mlp.fc2")
			for j := range x[i] {
				x[i][j] += o[j]
			}
		}
	}
	var out []float64
	for i := range x {
		out = append(out, norm(x[i], "final_layer_norm")...)
	}
	return out
}

// maxDiff returns the largest |got - want| and the largest |want|.
func maxDiff(got []float32, want []float64) (diff, scale float64) {
	for i, g := range got {
		diff = math.Max(diff, math.Abs(float64(g)-want[i]))
		scale = math.Max(scale, math.Abs(want[i]))
	}
	return diff, scale
}

func tinyTokens() [][]int {
	a := []int{49406, 320, 14211, 3086, 539, 320, 3240, 49407}
	b := []int{49406, 1042, 3027, 267, 73, 11207, 30249, 49407}
	for len(a) < ContextLength {
		a, b = append(a, 49407), append(b, 49407)
	}
	return [][]int{a, b}
}

func TestTinyTextModel(t *testing.T) {
	c := tinyConfig()
	src := tinySource(c, 7)
	m, err := Load(src, Prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config != c {
		t.Fatalf("inferred config %+v, want %+v", m.Config, c)
	}
	toks := tinyTokens()
	be := tensor.NewRef()
	outs := map[int]*tensor.Tensor{}
	for _, skip := range []int{1, 2} {
		y, err := m.Encode(be, toks, skip)
		if err != nil {
			t.Fatal(err)
		}
		if !tensor.SameShape(y.Shape, []int{2, ContextLength, c.Hidden}) {
			t.Fatalf("shape %v", y.Shape)
		}
		outs[skip] = y
		// Ref accumulates in float64 but rounds each op's output to float32;
		// outputs are layer-normed (|y| up to ~4); measured 4e-7, bound 1e-5.
		for b := range toks {
			want := naiveEncode(src, c, toks[b], c.Layers-(skip-1))
			diff, scale := maxDiff(y.F32[b*ContextLength*c.Hidden:(b+1)*ContextLength*c.Hidden], want)
			t.Logf("clip skip %d, sequence %d: max abs diff %.2e (max |y| %.2f)", skip, b, diff, scale)
			if diff > 1e-5 || scale < 0.5 {
				t.Errorf("clip skip %d, sequence %d: max abs diff %.2e vs naive float64 model", skip, b, diff)
			}
		}
	}
	// The native CPU backend, with each kernel family this machine has,
	// agrees with the ref backend.
	families := []string{"portable"}
	if tensor.CPUHasAVX512() {
		families = append(families, "avx512")
	}
	cpu := tensor.NewCPU()
	defer cpu.SetKernels("auto")
	for _, fam := range families {
		if err := cpu.SetKernels(fam); err != nil {
			t.Fatal(err)
		}
		for _, skip := range []int{1, 2} {
			y, err := m.Encode(cpu, toks, skip)
			if err != nil {
				t.Fatal(err)
			}
			// Measured: about 1e-6 (float32 accumulation in other orders).
			d, _ := maxDiff(y.F32, f64(outs[skip].F32))
			t.Logf("%s, clip skip %d: max abs diff vs ref %.2e", cpu.Name(), skip, d)
			if d > 2e-5 {
				t.Errorf("%s, clip skip %d: max abs diff vs ref %.2e", cpu.Name(), skip, d)
			}
		}
	}

	diff, _ := maxDiff(outs[1].F32, f64(outs[2].F32))
	if diff < 0.1 {
		t.Errorf("clip skip 2 output differs from clip skip 1 by only %.2e", diff)
	}
	// clip skip 0 means the default, the last layer.
	y0, err := m.Encode(be, toks, 0)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := maxDiff(y0.F32, f64(outs[1].F32)); d != 0 {
		t.Errorf("clip skip 0 differs from 1 by %.2e", d)
	}
	// Batch rows are independent and causal attention means a token's
	// embedding depends only on the tokens before it.
	one, err := m.Encode(be, toks[1:], 1)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := maxDiff(one.F32, f64(outs[1].F32[ContextLength*c.Hidden:])); d != 0 {
		t.Errorf("sequence 1 alone differs from batched by %.2e", d)
	}
}

func f64(v []float32) []float64 {
	out := make([]float64, len(v))
	for i, e := range v {
		out[i] = float64(e)
	}
	return out
}

func TestTextModelErrors(t *testing.T) {
	c := tinyConfig()
	src := tinySource(c, 3)
	m, err := Load(src, Prefix, &c)
	if err != nil {
		t.Fatal(err)
	}
	good := tinyTokens()
	cases := []struct {
		name   string
		tokens [][]int
		skip   int
		want   string
	}{
		{"no sequences", nil, 1, "no token sequences"},
		{"empty sequence", [][]int{{}}, 1, "sequence length 0"},
		{"too long", [][]int{make([]int, 78)}, 1, "sequence length 78"},
		{"ragged", [][]int{good[0], good[1][:10]}, 1, "sequence 1 has 10 tokens"},
		{"bad id", [][]int{{49406, 49408}}, 1, "id 49408"},
		{"negative id", [][]int{{-1}}, 1, "id -1"},
		{"skip too big", good, 3, "clip skip 3"},
		{"skip negative", good, -1, "clip skip -1"},
	}
	for _, cs := range cases {
		if _, err := m.Encode(tensor.NewRef(), cs.tokens, cs.skip); err == nil || !strings.Contains(err.Error(), cs.want) {
			t.Errorf("%s: error %v, want it to mention %q", cs.name, err, cs.want)
		}
	}

	// Missing and misshapen weights name the tensor.
	missing := tinySource(c, 3)
	delete(missing, Prefix+"encoder.layers.1.mlp.fc2.bias")
	if _, err := Load(missing, Prefix, nil); err == nil || !strings.Contains(err.Error(), "encoder.layers.1.mlp.fc2.bias") {
		t.Errorf("missing tensor: %v", err)
	}
	wrong := tinySource(c, 3)
	wrong[Prefix+"encoder.layers.0.self_attn.k_proj.weight"] = tensor.New(64, 32)
	if _, err := Load(wrong, Prefix, nil); err == nil || !strings.Contains(err.Error(), "k_proj.weight") {
		t.Errorf("misshapen tensor: %v", err)
	}
	if _, err := Load(src, "nothing.", nil); err == nil || !strings.Contains(err.Error(), "nothing.embeddings.token_embedding.weight") {
		t.Errorf("wrong prefix: %v", err)
	}
	three := c
	three.Layers = 3
	if _, err := Load(src, Prefix, &three); err == nil || !strings.Contains(err.Error(), "encoder.layers.2.") {
		t.Errorf("config with more layers than weights: %v", err)
	}
	bad := c
	bad.Heads = 5
	if _, err := Load(src, Prefix, &bad); err == nil || !strings.Contains(err.Error(), "multiple of 5 heads") {
		t.Errorf("bad heads: %v", err)
	}
}

func TestParseConfig(t *testing.T) {
	got, err := LoadConfig(sharedPath(t, "models", "sd15", "text_encoder", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got != SD15Config() {
		t.Errorf("sd15 config %+v, want %+v", got, SD15Config())
	}
	sdxl, err := LoadConfig(sharedPath(t, "models", "sdxl", "text_encoder_2", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if sdxl.Hidden != 1280 || sdxl.Layers != 32 || sdxl.Heads != 20 || sdxl.FF != 5120 || sdxl.Act != tensor.GELU {
		t.Errorf("sdxl text_encoder_2 config %+v", sdxl)
	}
	for _, c := range []struct{ json, want string }{
		{`{`, "unexpected end"},
		{`{"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12}`, "missing intermediate_size"},
		{`{"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 7, "intermediate_size": 3072}`, "multiple of 7 heads"},
		{`{"hidden_size": 768, "num_hidden_layers": 0, "num_attention_heads": 12, "intermediate_size": 3072}`, "positive"},
		{`{"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072, "hidden_act": "swish"}`, `"swish"`},
	} {
		if _, err := ParseConfig([]byte(c.json)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.json, err, c.want)
		}
	}
	if _, err := LoadConfig("/nonexistent/config.json"); !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing file: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
}

// TestEncodeEmbeddings checks the textual-inversion hook: encoding the
// unmodified token rows equals Encode exactly, and replacing one row changes
// that position and (causal attention) only later ones.
func TestEncodeEmbeddings(t *testing.T) {
	c := tinyConfig()
	src := tinySource(c, 7)
	m, err := Load(src, Prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	toks := tinyTokens()
	be := tensor.NewRef()
	for _, skip := range []int{1, 2} {
		want, err := m.Encode(be, toks, skip)
		if err != nil {
			t.Fatal(err)
		}
		x, err := m.TokenEmbeddings(toks)
		if err != nil {
			t.Fatal(err)
		}
		before := x.Clone()
		got, err := m.EncodeEmbeddings(be, x, skip)
		if err != nil {
			t.Fatal(err)
		}
		if d, _ := maxDiff(got.F32, f64(want.F32)); d != 0 {
			t.Errorf("clip skip %d: EncodeEmbeddings differs from Encode by %.2e", skip, d)
		}
		if d, _ := maxDiff(x.F32, f64(before.F32)); d != 0 {
			t.Errorf("EncodeEmbeddings modified its input")
		}
	}
	x, err := m.TokenEmbeddings(toks)
	if err != nil {
		t.Fatal(err)
	}
	const pos = 3
	w := c.Hidden
	for j := 0; j < w; j++ {
		x.F32[pos*w+j] = float32(j%5) * 0.1
	}
	got, err := m.EncodeEmbeddings(be, x, 1)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := m.Encode(be, toks, 1)
	L := len(toks[0])
	for i := 0; i < L; i++ {
		d, _ := maxDiff(got.F32[i*w:(i+1)*w], f64(want.F32[i*w:(i+1)*w]))
		if (i < pos) != (d == 0) {
			t.Errorf("position %d: diff %.2e after replacing row %d", i, d, pos)
		}
	}
	// Other batch rows are untouched.
	if d, _ := maxDiff(got.F32[L*w:], f64(want.F32[L*w:])); d != 0 {
		t.Errorf("batch row 1 changed by %.2e", d)
	}
	if _, err := m.EncodeEmbeddings(be, tensor.New(1, 5, w+1), 1); err == nil {
		t.Error("wrong width accepted")
	}
	if _, err := m.EncodeEmbeddings(be, nil, 1); err == nil {
		t.Error("nil accepted")
	}
	if _, err := m.TokenEmbeddings([][]int{{1, c.Vocab}}); err == nil {
		t.Error("out-of-range id accepted")
	}
}
