package lora

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// famPart is a module of a test LoRA for the SD 2.x / SDXL tiny models and
// the rows [row0, row0+rows) of the ldm weight it must change.
type famPart struct {
	part
	row0, rows int
}

func famKohya(mod, target string, in, out, row0 int, te bool) famPart {
	return famPart{kohya(mod, target, []int{4, in}, []int{out, 4}, 2, te), row0, out}
}

func famPEFT(mod, target string, in, out, row0 int, te bool) famPart {
	return famPart{peft(mod, target, []int{4, in}, []int{out, 4}, te), row0, out}
}

// TestFamilyTargets merges kohya and diffusers/PEFT LoRAs into the tiny
// SD 2.x and SDXL models: UNet attention (ldm- and diffusers-style kohya
// paths), SD 2.x's OpenCLIP (lora_te_), SDXL's CLIP ViT-L (lora_te1_) and
// OpenCLIP bigG (lora_te2_, text_encoder_2.). A q/k/v module changes only
// its third of the fused in_proj_weight, by exactly scale·up·down; every
// other weight is untouched; unknown modules are reported by name.
func TestFamilyTargets(t *testing.T) {
	const (
		oc2  = "cond_stage_model.model.transformer.resblocks."
		ocXL = "conditioner.embedders.1.model.transformer.resblocks."
		te1  = "conditioner.embedders.0.transformer.text_model.encoder.layers."
	)
	cases := []struct {
		family  string
		parts   []famPart
		unknown string
	}{
		{"sd21", []famPart{
			famKohya("lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q", U+"input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", 64, 64, 0, false),
			famKohya("lora_unet_up_blocks_0_attentions_0_transformer_blocks_0_attn2_to_v", U+"output_blocks.0.1.transformer_blocks.0.attn2.to_v.weight", 64, 128, 0, false),
			famKohya("lora_te_text_model_encoder_layers_0_self_attn_q_proj", oc2+"0.attn.in_proj_weight", 64, 64, 0, true),
			famKohya("lora_te_text_model_encoder_layers_1_self_attn_k_proj", oc2+"1.attn.in_proj_weight", 64, 64, 64, true),
			famKohya("lora_te_text_model_encoder_layers_0_mlp_fc1", oc2+"0.mlp.c_fc.weight", 64, 256, 0, true),
			famPEFT("text_encoder.text_model.encoder.layers.1.self_attn.out_proj", oc2+"1.attn.out_proj.weight", 64, 64, 0, true),
		}, "lora_te_text_model_encoder_layers_99_self_attn_q_proj"},
		{"sdxl", []famPart{
			famKohya("lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q", U+"input_blocks.3.1.transformer_blocks.0.attn1.to_q.weight", 128, 128, 0, false),
			famKohya("lora_unet_down_blocks_2_attentions_0_transformer_blocks_1_attn1_to_k", U+"input_blocks.5.1.transformer_blocks.1.attn1.to_k.weight", 128, 128, 0, false),
			famKohya("lora_te1_text_model_encoder_layers_0_self_attn_q_proj", te1+"0.self_attn.q_proj.weight", 64, 64, 0, true),
			famKohya("lora_te2_text_model_encoder_layers_0_self_attn_v_proj", ocXL+"0.attn.in_proj_weight", 128, 128, 256, true),
			famKohya("lora_te2_text_model_encoder_layers_1_self_attn_q_proj", ocXL+"1.attn.in_proj_weight", 128, 128, 0, true),
			famKohya("lora_te2_text_model_encoder_layers_0_mlp_fc2", ocXL+"0.mlp.c_proj.weight", 512, 128, 0, true),
			famPEFT("text_encoder_2.text_model.encoder.layers.1.self_attn.k_proj", ocXL+"1.attn.in_proj_weight", 128, 128, 128, true),
			famPEFT("unet.mid_block.attentions.0.transformer_blocks.0.attn2.to_out.0", U+"middle_block.1.transformer_blocks.0.attn2.to_out.0.weight", 128, 128, 0, false),
		}, "lora_te2_text_model_encoder_layers_0_self_attn_x_proj"},
	}
	for _, c := range cases {
		t.Run(c.family, func(t *testing.T) {
			src, err := testmodel.NewSource(testmodel.Options{Family: c.family, Size: "tiny", DType: tensor.F16, Seed: 3})
			if err != nil {
				t.Fatal(err)
			}
			var parts []part
			for _, p := range c.parts {
				parts = append(parts, p.part)
			}
			parts = append(parts, kohya(c.unknown, "", []int{4, 64}, []int{64, 4}, 0, true))
			path := filepath.Join(t.TempDir(), "fam.safetensors")
			file := writeLora(t, path, parts, nil)
			f, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			const te, un = 0.7, 1.3
			merged, rep, err := Apply(src, []Loaded{{File: f, TE: te, UNet: un}})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Unmatched) != 1 || rep.Unmatched[0].Key != c.unknown {
				t.Errorf("unmatched %+v, want only %s", rep.Unmatched, c.unknown)
			}
			if len(rep.Matched) != len(c.parts) {
				t.Fatalf("matched %d modules, want %d: %+v", len(rep.Matched), len(c.parts), rep.Matched)
			}
			// Expected change per weight: the sum of its modules' row updates.
			want := map[string][]float64{}
			for _, p := range c.parts {
				orig, ok := src.Get(p.target)
				if !ok {
					t.Fatalf("tiny %s has no %s", c.family, p.target)
				}
				if want[p.target] == nil {
					want[p.target] = make([]float64, orig.Numel())
				}
				mod := p.down[:len(p.down)-len(".lora_down.weight")]
				if p.alpha == "" {
					mod = p.down[:len(p.down)-len(".lora_A.weight")]
				}
				scale := un
				if p.te {
					scale = te
				}
				if p.alpha != "" {
					scale *= float64(p.alphaVal) / 4
				}
				found := false
				for _, m := range rep.Matched {
					if m.Key == mod {
						found = true
						if m.Target != p.target || math.Abs(m.Scale-scale) > 1e-12 {
							t.Errorf("%s: matched %s at scale %g, want %s at %g", mod, m.Target, m.Scale, p.target, scale)
						}
					}
				}
				if !found {
					t.Errorf("%s not matched", mod)
				}
				d := wantDelta(file[p.up], file[p.down], scale)
				cols := orig.Numel() / orig.Shape[0]
				copy(want[p.target][p.row0*cols:], addF64(want[p.target][p.row0*cols:p.row0*cols+len(d)], d))
			}
			ch := merged.(*Merged).Changed()
			if len(ch) != len(want) {
				t.Errorf("changed %v, want %d weights", ch, len(want))
			}
			for name, w := range want {
				orig, _ := src.Get(name)
				got, _ := merged.Get(name)
				o, g := orig.ToF32().F32, got.ToF32().F32
				worst, changed := 0.0, 0
				for i := range o {
					delta := float64(g[i]) - float64(o[i])
					worst = math.Max(worst, math.Abs(delta-w[i]))
					if delta != 0 {
						changed++
					}
					if w[i] == 0 && delta != 0 {
						t.Fatalf("%s: element %d (row %d) changed by %g outside the module's rows", name, i, i/(len(o)/orig.Shape[0]), delta)
					}
				}
				if worst > 1e-6 || changed == 0 {
					t.Errorf("%s: merged-original differs from scale·up·down by %.3g (%d elements changed)", name, worst, changed)
				}
			}
		})
	}
}

func addF64(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] + b[i]
	}
	return out
}

// TestFamilyKohyaBothStyles: on the SDXL key map every UNet attention
// projection resolves under its ldm-style and its diffusers-style kohya
// name to the same weight.
func TestFamilyKohyaBothStyles(t *testing.T) {
	src, err := testmodel.NewSource(testmodel.Options{Family: "sdxl", Size: "tiny", DType: tensor.F16, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	tg, err := NewTargets(src)
	if err != nil {
		t.Fatal(err)
	}
	km, err := ckpt.NewKeyMap(src.Names())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, name := range src.Names() {
		rel, ok := cutPrefixSuffix(name, U, ".attn1.to_q.weight")
		if !ok {
			continue
		}
		d, ok := km.ToDiffusers(name)
		if !ok {
			t.Fatalf("no diffusers name for %s", name)
		}
		dk := "lora_unet_" + underscore(d[len("unet/"):len(d)-len(".weight")])
		lk := "lora_unet_" + underscore(rel) + "_attn1_to_q"
		for _, k := range []string{dk, lk} {
			if got, te, ok := tg.Resolve(k); !ok || te || got != name {
				t.Errorf("%s resolves to %q (ok %v te %v), want %s", k, got, ok, te, name)
			}
		}
		n++
	}
	if n < 5 {
		t.Fatalf("only %d attention blocks found", n)
	}
}

func cutPrefixSuffix(s, p, sfx string) (string, bool) {
	if len(s) < len(p)+len(sfx) || s[:len(p)] != p || s[len(s)-len(sfx):] != sfx {
		return "", false
	}
	return s[len(p) : len(s)-len(sfx)], true
}

func underscore(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '.' {
			b[i] = '_'
		}
	}
	return string(b)
}
