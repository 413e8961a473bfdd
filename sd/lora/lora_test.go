package lora

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/clip"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// tiny returns the tiny random SD 1.5 model (F16 weights), ldm names.
func tiny(t *testing.T) *testmodel.Source {
	t.Helper()
	s, err := testmodel.NewSource(testmodel.Options{Size: "tiny", DType: tensor.F16, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rnd is a deterministic f32 tensor.
func rnd(seed float64, shape ...int) *tensor.Tensor {
	x := tensor.New(shape...)
	for i := range x.F32 {
		x.F32[i] = float32(math.Sin(seed*7.1+float64(i)*0.713)) * 0.5
	}
	return x
}

// part is one module written to a test LoRA file and the ldm weight it
// must land on, worked out by hand for the tiny model (one resnet per
// level: down level 0 is input_blocks 1 (and op at 2), level 1 is
// input_blocks 3; up level L is output_blocks 2L, 2L+1).
type part struct {
	down, up, alpha string // tensor names in the file ("" alpha: none)
	target          string
	downShape       []int
	upShape         []int
	alphaVal        float32
	te              bool
}

const (
	U  = "model.diffusion_model."
	TE = "cond_stage_model.transformer.text_model."
)

func kohya(mod, target string, down, up []int, alpha float32, te bool) part {
	p := part{down: mod + ".lora_down.weight", up: mod + ".lora_up.weight", target: target,
		downShape: down, upShape: up, alphaVal: alpha, te: te}
	if alpha != 0 {
		p.alpha = mod + ".alpha"
	}
	return p
}

func peft(mod, target string, down, up []int, te bool) part {
	return part{down: mod + ".lora_A.weight", up: mod + ".lora_B.weight", target: target, downShape: down, upShape: up, te: te}
}

func oldDiffusers(mod, target string, down, up []int) part {
	return part{down: mod + ".down.weight", up: mod + ".up.weight", target: target, downShape: down, upShape: up,
		te: strings.HasPrefix(mod, "text_encoder.")}
}

func writeLora(t *testing.T, path string, parts []part, extra tensor.MapSource) map[string]*tensor.Tensor {
	t.Helper()
	m := tensor.MapSource{}
	for i, p := range parts {
		m[p.down] = rnd(float64(i)+1, p.downShape...)
		m[p.up] = rnd(float64(i)+0.5, p.upShape...)
		if p.alpha != "" {
			m[p.alpha] = tensor.FromF32([]float32{p.alphaVal})
		}
	}
	for k, v := range extra {
		m[k] = v
	}
	if err := ckpt.WriteSafetensors(path, m, ckpt.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	return m
}

// wantDelta computes scale·up·down in float64, flattened like the weight.
func wantDelta(up, down *tensor.Tensor, scale float64) []float64 {
	out, r := up.Shape[0], down.Shape[0]
	cols := down.Numel() / r
	d := make([]float64, out*cols)
	for i := 0; i < out; i++ {
		for j := 0; j < cols; j++ {
			s := 0.0
			for k := 0; k < r; k++ {
				s += float64(up.F32[i*r+k]) * float64(down.F32[k*cols+j])
			}
			d[i*cols+j] = s * scale
		}
	}
	return d
}

func TestApplyNamingStyles(t *testing.T) {
	src := tiny(t)
	dir := t.TempDir()
	styles := map[string][]part{
		"kohya": {
			kohya("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
				U+"input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight", []int{4, 32}, []int{32, 4}, 2, false),
			kohya("lora_unet_up_blocks_1_attentions_1_transformer_blocks_0_attn2_to_k",
				U+"output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight", []int{8, 64}, []int{32, 8}, 0, false),
			kohya("lora_unet_mid_block_attentions_0_proj_in", // 1x1 conv
				U+"middle_block.1.proj_in.weight", []int{4, 64, 1, 1}, []int{64, 4, 1, 1}, 1, false),
			kohya("lora_te_text_model_encoder_layers_1_mlp_fc1",
				TE+"encoder.layers.1.mlp.fc1.weight", []int{4, 64}, []int{256, 4}, 8, true),
			// ldm-style kohya name (some trainers write these)
			kohya("lora_unet_output_blocks_0_1_transformer_blocks_0_ff_net_2",
				U+"output_blocks.0.1.transformer_blocks.0.ff.net.2.weight", []int{2, 256}, []int{64, 2}, 2, false),
		},
		"locon": {
			kohya("lora_unet_down_blocks_0_resnets_0_conv1",
				U+"input_blocks.1.0.in_layers.2.weight", []int{4, 32, 3, 3}, []int{32, 4, 1, 1}, 2, false),
			kohya("lora_unet_down_blocks_0_downsamplers_0_conv",
				U+"input_blocks.2.0.op.weight", []int{3, 32, 3, 3}, []int{32, 3, 1, 1}, 0, false),
		},
		"peft": {
			peft("unet.up_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v",
				U+"output_blocks.0.1.transformer_blocks.0.attn2.to_v.weight", []int{4, 64}, []int{64, 4}, false),
			peft("unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0",
				U+"input_blocks.3.1.transformer_blocks.0.attn1.to_out.0.weight", []int{4, 64}, []int{64, 4}, false),
			peft("text_encoder.text_model.encoder.layers.0.self_attn.v_proj",
				TE+"encoder.layers.0.self_attn.v_proj.weight", []int{2, 64}, []int{64, 2}, true),
		},
		"diffusers-old": {
			oldDiffusers("unet.mid_block.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora",
				U+"middle_block.1.transformer_blocks.0.attn1.to_out.0.weight", []int{4, 64}, []int{64, 4}),
			oldDiffusers("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.processor.to_k_lora",
				U+"input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", []int{4, 64}, []int{32, 4}),
			oldDiffusers("text_encoder.text_model.encoder.layers.1.self_attn.to_q_lora",
				TE+"encoder.layers.1.self_attn.q_proj.weight", []int{4, 64}, []int{64, 4}),
		},
	}
	for style, parts := range styles {
		t.Run(style, func(t *testing.T) {
			path := filepath.Join(dir, style+".safetensors")
			tensors := writeLora(t, path, parts, nil)
			f, err := Load(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Modules) != len(parts) || len(f.Unsupported) != 0 || f.Name != style {
				t.Fatalf("%d modules, unsupported %v, name %q", len(f.Modules), f.Unsupported, f.Name)
			}
			const te, un = 0.7, 1.3
			out, rep, err := Apply(src, []Loaded{{File: f, TE: te, UNet: un}})
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Matched) != len(parts) || len(rep.Unmatched) != 0 {
				t.Fatalf("report %+v", rep)
			}
			targets := map[string]bool{}
			for _, p := range parts {
				targets[p.target] = true
				rank := float64(p.downShape[0])
				alpha := rank
				if p.alpha != "" {
					alpha = float64(p.alphaVal)
				}
				strength := un
				if p.te {
					strength = te
				}
				orig, _ := src.Get(p.target)
				got, ok := out.Get(p.target)
				if !ok || got.DType != tensor.F32 || !tensor.SameShape(got.Shape, orig.Shape) {
					t.Fatalf("%s: merged %v, original %v", p.target, got, orig)
				}
				want := wantDelta(tensors[p.up], tensors[p.down], alpha/rank*strength)
				o := orig.Float32s()
				var maxd, maxw float64
				for i := range want {
					maxd = math.Max(maxd, math.Abs(float64(got.F32[i])-float64(o[i])-want[i]))
					maxw = math.Max(maxw, math.Abs(want[i]))
				}
				// f32 sums of at most 8 products of |x| <= 0.25, plus rounding of W+delta.
				if maxd > 1e-6 || maxw < 0.01 {
					t.Errorf("%s: merged - original differs from scale·up·down by %.2e (max |delta| %.3f)", p.target, maxd, maxw)
				}
			}
			// Every other weight is untouched: the very same tensor.
			for _, n := range src.Names() {
				if targets[n] {
					continue
				}
				a, _ := src.Get(n)
				b, _ := out.Get(n)
				if a != b {
					t.Fatalf("%s changed although no LoRA module targets it", n)
				}
			}
			// The networks build from the merged source.
			if m, err := clip.Load(out, clip.Prefix, nil); err != nil {
				t.Fatal(err)
			} else if fc1, _ := out.Get(TE + "encoder.layers.1.mlp.fc1.weight"); m.Layers[1].MLP.FC1.Weight != fc1 {
				t.Error("text model does not use the source's fc1 weight")
			}
			if got := out.(*Merged).Changed(); len(got) != len(parts) {
				t.Errorf("changed %v", got)
			}
			if dt, _, _ := out.(*Merged).Stored(parts[0].target); dt != "F32" {
				t.Errorf("stored dtype %s", dt)
			}
		})
	}
}

// TestApplySeveral merges two LoRAs touching the same weight: their updates
// add up, each at its own strength; a module matching nothing is reported by
// name, as are unsupported tensors.
func TestApplySeveral(t *testing.T) {
	src := tiny(t)
	dir := t.TempDir()
	target := U + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
	a := []part{kohya("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", target, []int{4, 32}, []int{32, 4}, 2, false)}
	b := []part{peft("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", target, []int{2, 32}, []int{32, 2}, false),
		kohya("lora_unet_down_blocks_9_attentions_0_nothing_here", "", []int{2, 8}, []int{8, 2}, 0, false)}
	ta := writeLora(t, filepath.Join(dir, "a.safetensors"), a, nil)
	tb := writeLora(t, filepath.Join(dir, "b.safetensors"), b, tensor.MapSource{
		"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a": tensor.New(2, 2),
		// a LoCon module with a Tucker core: left out whole
		"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight":   tensor.New(2, 32, 1, 1),
		"lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight":    tensor.New(2, 2, 3, 3),
		"lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight":     tensor.New(32, 2, 1, 1),
		"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": tensor.New(256, 2)})
	lib := &Library{Dir: dir}
	fa, err := lib.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	fb, err := lib.Get("b")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := lib.Get("a"); again != fa {
		t.Error("library did not keep the loaded file")
	}
	out, rep, err := Apply(src, []Loaded{{fa, 1, 0.5}, {fb, 1, -2}})
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := src.Get(target)
	got, _ := out.Get(target)
	da := wantDelta(ta[a[0].up], ta[a[0].down], 2.0/4*0.5)
	db := wantDelta(tb[b[0].up], tb[b[0].down], 1*-2.0)
	o := orig.Float32s()
	var maxd float64
	for i := range da {
		maxd = math.Max(maxd, math.Abs(float64(got.F32[i])-float64(o[i])-da[i]-db[i]))
	}
	if maxd > 1e-6 {
		t.Errorf("two LoRAs: merged differs from the sum of updates by %.2e", maxd)
	}
	if len(rep.Matched) != 2 || rep.Matched[0].Scale != 0.25 || rep.Matched[1].Scale != -2 {
		t.Errorf("matched %+v", rep.Matched)
	}
	unmatched := map[string]string{}
	for _, u := range rep.Unmatched {
		if u.File != "b" {
			t.Errorf("unmatched from %s: %+v", u.File, u)
		}
		unmatched[u.Key] = u.Reason
	}
	for _, k := range []string{"lora_unet_down_blocks_9_attentions_0_nothing_here",
		"lora_unet_down_blocks_0_resnets_0_conv1.lora_down.weight",
		"lora_unet_down_blocks_0_resnets_0_conv1.lora_mid.weight",
		"lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight",
		"lora_unet_mid_block_attentions_0_proj_in.hada_w1_a",
		"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight"} {
		if _, ok := unmatched[k]; !ok {
			t.Errorf("%s not reported as unmatched (report %v)", k, unmatched)
		}
	}
	if len(unmatched) != 6 {
		t.Errorf("unmatched %v", unmatched)
	}
	// The backend path gives the same weights.
	for _, be := range []tensor.Backend{tensor.NewRef(), tensor.NewCPU()} {
		out2, _, err := ApplyWith(be, src, []Loaded{{fa, 1, 0.5}, {fb, 1, -2}})
		if err != nil {
			t.Fatal(err)
		}
		got2, _ := out2.Get(target)
		var d float64
		for i := range got.F32 {
			d = math.Max(d, math.Abs(float64(got.F32[i]-got2.F32[i])))
		}
		if d > 1e-6 {
			t.Errorf("%s: ApplyWith differs from Apply by %.2e", be.Name(), d)
		}
	}
	// KeepDType: the merged f32 weight rounded to the model's f16.
	out3, _, err := ApplyOptions(src, []Loaded{{fa, 1, 0.5}, {fb, 1, -2}}, Options{KeepDType: true})
	if err != nil {
		t.Fatal(err)
	}
	got3, _ := out3.Get(target)
	if got3.DType != tensor.F16 || !tensor.SameShape(got3.Shape, orig.Shape) {
		t.Fatalf("KeepDType gave %v", got3)
	}
	for i, h := range got3.Half {
		if h != tensor.F32ToF16(got.F32[i]) {
			t.Fatalf("KeepDType element %d: %#x, want %#x", i, h, tensor.F32ToF16(got.F32[i]))
		}
	}
	if dt, _, _ := out3.(*Merged).Stored(target); dt != "F16" {
		t.Errorf("KeepDType stored dtype %s", dt)
	}
	// No LoRAs: src itself.
	if s, _, err := Apply(src, nil); err != nil || s != tensor.Source(src) {
		t.Errorf("Apply(nil) = %v, %v", s, err)
	}
}

func TestLoraErrors(t *testing.T) {
	src := tiny(t)
	dir := t.TempDir()
	// A LoRA for a wider model (SD 1.5 real width 320 vs tiny 32).
	wide := filepath.Join(dir, "wide.safetensors")
	writeLora(t, wide, []part{kohya("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q", "",
		[]int{4, 320}, []int{320, 4}, 0, false)}, nil)
	f, err := Load(wide)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Apply(src, []Loaded{{f, 1, 1}}); err == nil || !strings.Contains(err.Error(), "does not fit weight") ||
		!strings.Contains(err.Error(), "wide.safetensors") {
		t.Errorf("wide LoRA: %v", err)
	}
	bad := filepath.Join(dir, "bad.safetensors")
	ckpt.WriteSafetensors(bad, tensor.MapSource{"x.lora_down.weight": tensor.New(4, 8), "x.lora_up.weight": tensor.New(8, 3)}, ckpt.WriteOptions{})
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), "does not fit down") {
		t.Errorf("rank mismatch: %v", err)
	}
	none := filepath.Join(dir, "none.safetensors")
	ckpt.WriteSafetensors(none, tensor.MapSource{"foo": tensor.New(2)}, ckpt.WriteOptions{})
	if _, err := Load(none); err == nil || !strings.Contains(err.Error(), "no LoRA modules") {
		t.Errorf("no modules: %v", err)
	}
	if _, err := Find(dir, "missing"); err == nil || !strings.Contains(err.Error(), "missing.safetensors") {
		t.Errorf("Find missing: %v", err)
	}
	if _, err := Find(dir, "../etc"); err == nil {
		t.Error("Find accepted a path")
	}
	sub := filepath.Join(dir, "styles")
	os.Mkdir(sub, 0o755)
	os.Rename(bad, filepath.Join(sub, "deep.pt"))
	if p, err := Find(dir, "deep"); err != nil || p != filepath.Join(sub, "deep.pt") {
		t.Errorf("Find in subfolder: %q %v", p, err)
	}
	if _, err := (&Library{}).Get("x"); err == nil || !strings.Contains(err.Error(), "--lora-dir") {
		t.Errorf("library without dir: %v", err)
	}
}
