package testmodel_test

import (
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

func counts(specs []testmodel.Spec) map[string]int {
	c := map[string]int{}
	for _, s := range specs {
		switch {
		case strings.HasPrefix(s.Name, "model.diffusion_model."):
			c["unet"]++
		case strings.HasPrefix(s.Name, "first_stage_model."):
			c["vae"]++
		case strings.HasPrefix(s.Name, "cond_stage_model."):
			c["clip"]++
		default:
			c["other"]++
		}
	}
	return c
}

func TestNamesCounts(t *testing.T) {
	full, err := testmodel.Names(testmodel.Options{Size: "full", DType: tensor.F16})
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(counts(full)); got != "map[clip:197 other:14 unet:686 vae:248]" {
		t.Errorf("full counts %s", got)
	}
	tiny, err := testmodel.Names(testmodel.Options{Size: "tiny", DType: tensor.F32})
	if err != nil {
		t.Fatal(err)
	}
	// tiny UNet: 2 levels x 1 resnet, attention everywhere; CLIP: 2 layers.
	if got := fmt.Sprint(counts(tiny)); got != "map[clip:37 other:14 unet:286 vae:124]" {
		t.Errorf("tiny counts %s", got)
	}
	shapes := map[string]string{}
	for _, s := range tiny {
		shapes[s.Name] = fmt.Sprint(s.Shape)
	}
	for name, want := range map[string]string{
		"model.diffusion_model.time_embed.0.weight":                                     "[128 32]",
		"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": "[32 64]",
		"model.diffusion_model.input_blocks.2.0.op.weight":                              "[32 32 3 3]",
		"model.diffusion_model.output_blocks.0.0.in_layers.2.weight":                    "[64 128 3 3]",
		"model.diffusion_model.output_blocks.1.2.conv.weight":                           "[64 64 3 3]",
		"model.diffusion_model.out.2.weight":                                            "[4 32 3 3]",
		"first_stage_model.quant_conv.weight":                                           "[8 8 1 1]",
		"first_stage_model.post_quant_conv.weight":                                      "[4 4 1 1]",
		"first_stage_model.decoder.up.1.upsample.conv.weight":                           "[64 64 3 3]",
		"first_stage_model.decoder.mid.attn_1.q.weight":                                 "[64 64 1 1]",
		"cond_stage_model.transformer.text_model.embeddings.token_embedding.weight":     "[49408 64]",
		"cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc1.weight":       "[256 64]",
	} {
		if shapes[name] != want {
			t.Errorf("%s shape %s, want %s", name, shapes[name], want)
		}
	}
}

// TestFullMatchesMkckpt compares names, dtypes and shapes of the full model
// with the shared generator's file, and the values of a few tensors bit for bit.
func TestFullMatchesMkckpt(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the 2.1 GB shared SD 1.5 checkpoint")
	}
	s := testckpt.OpenSD15(t)
	specs, _ := testmodel.Names(testmodel.Options{Size: "full", DType: tensor.F16})
	if len(specs) != len(s.Names()) {
		t.Errorf("%d tensors, mkckpt has %d", len(specs), len(s.Names()))
	}
	for _, sp := range specs {
		dt, shape, ok := s.Stored(sp.Name)
		if !ok || dt != sp.DType || !tensor.SameShape(shape, sp.Shape) {
			t.Errorf("%s: %s %v, mkckpt %s %v (present %v)", sp.Name, sp.DType, sp.Shape, dt, shape, ok)
		}
	}
	src, err := testmodel.NewSource(testmodel.Options{Size: "full", DType: tensor.F16, Seed: testmodel.DefaultSeed})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"model.diffusion_model.input_blocks.0.0.weight", "first_stage_model.decoder.conv_in.bias",
		"cond_stage_model.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight",
		"first_stage_model.encoder.norm_out.weight", "alphas_cumprod", "posterior_log_variance_clipped",
		"cond_stage_model.transformer.text_model.embeddings.position_ids", "model_ema.decay"} {
		want, _ := s.Get(n)
		got, _ := src.Get(n)
		if got.DType != want.DType || !tensor.SameShape(got.Shape, want.Shape) {
			t.Fatalf("%s: %v vs mkckpt %v", n, got, want)
		}
		if got.DType == tensor.F32 {
			for i := range want.F32 {
				if math.Float32bits(got.F32[i]) != math.Float32bits(want.F32[i]) {
					t.Fatalf("%s[%d] = %v, mkckpt %v", n, i, got.F32[i], want.F32[i])
				}
			}
			continue
		}
		for i := range want.Half {
			if got.Half[i] != want.Half[i] {
				t.Fatalf("%s[%d] = %#04x, mkckpt %#04x", n, i, got.Half[i], want.Half[i])
			}
		}
	}
}

// TestLayoutsAgree writes the tiny model in every layout and checks that
// each reads back with identical weights under identical ldm names.
func TestLayoutsAgree(t *testing.T) {
	dir := t.TempDir()
	for _, dt := range []tensor.DType{tensor.F16, tensor.BF16, tensor.F32} {
		ref, err := testmodel.NewSource(testmodel.Options{DType: dt, Seed: 7})
		if err != nil {
			t.Fatal(err)
		}
		layouts := []string{"single", "ckpt", "diffusers"}
		if dt != tensor.F16 {
			layouts = layouts[:1] // dtype handling is shared by all writers
		}
		for _, layout := range layouts {
			out := filepath.Join(dir, fmt.Sprintf("tiny-%s-%s", dt, layout))
			opts := testmodel.Options{DType: dt, Seed: 7, Layout: layout, Output: out}
			if layout == "diffusers" {
				if _, err := testmodel.DefaultConfigDir(); err != nil {
					t.Skip(err)
				}
			}
			if err := testmodel.Write(opts); err != nil {
				t.Fatal(err)
			}
			c, err := ckpt.Open(out, ckpt.Options{})
			if err != nil {
				t.Fatal(err)
			}
			info := ckpt.Describe(c)
			wantLayout := map[string]string{"single": "safetensors", "ckpt": "ckpt", "diffusers": "diffusers"}[layout]
			if info.Layout != wantLayout || info.Family != "sd1" {
				t.Errorf("%s: layout %s family %s", out, info.Layout, info.Family)
			}
			if info.DType != map[tensor.DType]string{tensor.F16: "F16", tensor.BF16: "BF16", tensor.F32: "F32"}[dt] {
				t.Errorf("%s: dominant dtype %s", out, info.DType)
			}
			wantN := 286 + 124 + 37 + 14
			if layout == "diffusers" {
				wantN -= 14 // schedule buffers and model_ema scalars have no diffusers home
			}
			if info.Tensors != wantN || info.Parts["unet"] != 286 || info.Parts["vae"] != 124 || info.Parts["text_encoder"] != 37 {
				t.Errorf("%s: %d tensors %v, want %d", out, info.Tensors, info.Parts, wantN)
			}
			for _, n := range c.Names() {
				got, _ := c.Get(n)
				want, ok := ref.Get(n)
				if !ok || got.DType != want.DType || !tensor.SameShape(got.Shape, want.Shape) {
					t.Fatalf("%s %s: %v, want %v", out, n, got, want)
				}
				g, w := got.Float32s(), want.Float32s()
				for i := range w {
					if math.Float32bits(g[i]) != math.Float32bits(w[i]) {
						t.Fatalf("%s %s[%d] = %v, want %v", out, n, i, g[i], w[i])
					}
				}
			}
			c.Close()
		}
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []testmodel.Options{
		{Family: "sd3", Output: "x"},
		{Size: "huge", Output: "x"},
		{Layout: "onnx", Output: filepath.Join(t.TempDir(), "x")},
		{},
	} {
		if err := testmodel.Write(o); err == nil {
			t.Errorf("Write(%+v) succeeded", o)
		}
	}
}
