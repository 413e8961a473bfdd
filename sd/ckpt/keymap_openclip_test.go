package ckpt_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

func fullNames(t *testing.T, family string) []string {
	t.Helper()
	specs, err := testmodel.Names(testmodel.Options{Family: family, Size: "full", DType: tensor.F16})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
	}
	return names
}

// noCounterpart are ldm tensors that diffusers folders do not store.
func noCounterpart(n string) bool {
	return !strings.Contains(n, ".") || strings.HasPrefix(n, "model_ema.") || strings.HasSuffix(n, "logit_scale") ||
		n == ckpt.PrefixOpenCLIPSD2+"text_projection"
}

// TestOpenCLIPKeyMapRoundTrip maps every tensor of the full-size SD 2.1 and
// SDXL layouts to diffusers and back, from a key map built on ldm names and
// (SDXL) one built on the diffusers names.
func TestOpenCLIPKeyMapRoundTrip(t *testing.T) {
	for _, family := range []string{"sd21", "sdxl"} {
		names := fullNames(t, family)
		km, err := ckpt.NewKeyMap(names)
		if err != nil {
			t.Fatal(err)
		}
		var diff []string
		back := map[string]string{}
		mapped := 0
		for _, n := range names {
			parts, _, ok := km.DiffusersParts(n)
			if !ok {
				if !noCounterpart(n) {
					t.Errorf("%s: %s has no diffusers name", family, n)
				}
				continue
			}
			mapped++
			for _, p := range parts {
				l, ok := km.ToLDM(p)
				if !ok || l != n {
					t.Errorf("%s: %s -> %s -> %q, %v", family, n, p, l, ok)
				}
				if prev, dup := back[p]; dup {
					t.Errorf("%s: %s and %s both map to %s", family, prev, n, p)
				}
				back[p] = n
				diff = append(diff, p)
			}
		}
		if mapped < 1000 {
			t.Fatalf("%s: only %d tensors mapped", family, mapped)
		}
		if family != "sdxl" {
			continue
		}
		dm, err := ckpt.NewKeyMap(diff)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range diff {
			if l, ok := dm.ToLDM(p); !ok || l != back[p] {
				t.Errorf("diffusers-side map: %s -> %q, want %s", p, l, back[p])
			}
		}
	}
}

func TestOpenCLIPKeyMapNames(t *testing.T) {
	sd2, err := ckpt.NewKeyMap(fullNames(t, "sd21"))
	if err != nil {
		t.Fatal(err)
	}
	xl, err := ckpt.NewKeyMap(fullNames(t, "sdxl"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		km    *ckpt.KeyMap
		ldm   string
		parts []string
		tr    bool
	}{
		{sd2, "cond_stage_model.model.transformer.resblocks.5.attn.in_proj_weight", []string{
			"text_encoder/text_model.encoder.layers.5.self_attn.q_proj.weight",
			"text_encoder/text_model.encoder.layers.5.self_attn.k_proj.weight",
			"text_encoder/text_model.encoder.layers.5.self_attn.v_proj.weight"}, false},
		{sd2, "cond_stage_model.model.transformer.resblocks.0.mlp.c_fc.bias", []string{
			"text_encoder/text_model.encoder.layers.0.mlp.fc1.bias"}, false},
		{sd2, "cond_stage_model.model.positional_embedding", []string{
			"text_encoder/text_model.embeddings.position_embedding.weight"}, false},
		{sd2, "cond_stage_model.model.ln_final.weight", []string{"text_encoder/text_model.final_layer_norm.weight"}, false},
		{xl, "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_bias", []string{
			"text_encoder_2/text_model.encoder.layers.31.self_attn.q_proj.bias",
			"text_encoder_2/text_model.encoder.layers.31.self_attn.k_proj.bias",
			"text_encoder_2/text_model.encoder.layers.31.self_attn.v_proj.bias"}, false},
		{xl, "conditioner.embedders.1.model.text_projection", []string{"text_encoder_2/text_projection.weight"}, true},
		{xl, "conditioner.embedders.0.transformer.text_model.encoder.layers.3.self_attn.q_proj.weight", []string{
			"text_encoder/text_model.encoder.layers.3.self_attn.q_proj.weight"}, false},
		{xl, "model.diffusion_model.label_emb.0.2.weight", []string{"unet/add_embedding.linear_2.weight"}, false},
		{xl, "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight", []string{
			"unet/down_blocks.1.attentions.0.transformer_blocks.1.attn2.to_k.weight"}, false},
		{xl, "model.diffusion_model.output_blocks.2.2.conv.weight", []string{"unet/up_blocks.0.upsamplers.0.conv.weight"}, false},
	} {
		parts, tr, ok := c.km.DiffusersParts(c.ldm)
		if !ok || !slices.Equal(parts, c.parts) || tr != c.tr {
			t.Errorf("%s -> %v %v %v, want %v %v", c.ldm, parts, tr, ok, c.parts, c.tr)
		}
	}
	if _, ok := sd2.ToDiffusers("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"); ok {
		t.Error("ToDiffusers maps a fused tensor to one name")
	}
}

// TestOpenCLIPDiffusersValues writes the tiny SDXL model as a diffusers
// folder and checks that the fused and transposed tensors read back equal
// the single-file ones.
func TestOpenCLIPDiffusersValues(t *testing.T) {
	shared := filepath.Join("..", "..", "..", "shared", "models")
	dir := filepath.Join(t.TempDir(), "xl")
	opts := testmodel.Options{Family: "sdxl", Size: "tiny", DType: tensor.BF16, Layout: "diffusers", Seed: 5, Output: dir,
		ConfigDir: filepath.Join(shared, "sdxl"), TokenizerDir: filepath.Join(shared, "sd15", "tokenizer")}
	if err := testmodel.Write(opts); err != nil {
		t.Skipf("no shared configs: %v", err)
	}
	src, err := testmodel.NewSource(opts)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := ckpt.Open(dir, ckpt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if ck.Family != "sdxl" {
		t.Fatalf("family %s", ck.Family)
	}
	n := 0
	for _, name := range src.Names() {
		want, _ := src.Get(name)
		got, ok := ck.Get(name)
		if !ok {
			if noCounterpart(name) {
				continue
			}
			t.Fatalf("%s missing from the diffusers folder", name)
		}
		if !slices.Equal(got.Shape, want.Shape) || !slices.Equal(got.Half, want.Half) || !slices.Equal(got.F32, want.F32) || got.DType != want.DType {
			t.Fatalf("%s: got %s, want %s (or different values)", name, got, want)
		}
		wdt, _, _ := src.Stored(name)
		if dt, shape, ok := ck.Stored(name); !ok || dt != wdt || !slices.Equal(shape, want.Shape) {
			t.Fatalf("%s: stored %s %v %v", name, dt, shape, ok)
		}
		n++
	}
	if n < 300 {
		t.Fatalf("only %d tensors compared", n)
	}
}
