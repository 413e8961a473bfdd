package lora

import (
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/clip"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/prompt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/unet"
)

// TestPipelineIntegration runs the integration the pipeline uses: LoRA tags
// from the prompt, LoRAs from a folder merged into the tiny model, text
// model and UNet rebuilt from the merged source, a two-chunk prompt encoded
// for CFG and fed to the UNet (context [2, 154, 64]).
func TestPipelineIntegration(t *testing.T) {
	tok, err := clip.LoadTokenizer(filepath.Join(testckpt.SharedDir(t), "models", "sd15", "tokenizer"))
	if err != nil {
		t.Fatal(err)
	}
	src := tiny(t)
	dir := t.TempDir()
	writeLora(t, filepath.Join(dir, "style.safetensors"), []part{
		kohya("lora_te_text_model_encoder_layers_1_mlp_fc1", "", []int{4, 64}, []int{256, 4}, 4, true),
		kohya("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k", "", []int{4, 64}, []int{32, 4}, 4, false),
	}, nil)
	be := tensor.NewCPU()
	text := "a photo of a cat, " + strings.Repeat("detailed ", 80) + " BREAK red <lora:style:0.8:1.5>"

	_, tags := prompt.ExtractTags(text)
	refs, err := prompt.LoraRefs(tags)
	if err != nil {
		t.Fatal(err)
	}
	lib := &Library{Dir: dir}
	var ls []Loaded
	for _, r := range refs {
		f, err := lib.Get(r.Name)
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, Loaded{File: f, TE: r.TE, UNet: r.UNet})
	}
	merged, rep, err := ApplyWith(be, src, ls)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Matched) != 2 || len(rep.Unmatched) != 0 || rep.Matched[0].Scale != 0.8 || rep.Matched[1].Scale != 1.5 {
		t.Fatalf("report %+v", rep)
	}

	encode := func(s tensor.Source) (*tensor.Tensor, *tensor.Tensor) {
		tm, err := clip.Load(s, clip.Prefix, nil)
		if err != nil {
			t.Fatal(err)
		}
		enc, err := prompt.NewEncoder(tok, tm, nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, _, err := enc.EncodeCFG(be, text, "blurry", 1)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := unet.InferConfig(s)
		if err != nil {
			t.Fatal(err)
		}
		u, err := unet.Load(s, cfg)
		if err != nil {
			t.Fatal(err)
		}
		x := rnd(9, 2, 4, 8, 8)
		eps, err := u.Forward(be, x, []float32{500, 500}, ctx)
		if err != nil {
			t.Fatal(err)
		}
		return ctx, eps
	}
	ctx0, eps0 := encode(src)
	ctx1, eps1 := encode(merged)
	if !tensor.SameShape(ctx1.Shape, []int{2, 3 * 77, 64}) || !tensor.SameShape(eps1.Shape, []int{2, 4, 8, 8}) {
		t.Fatalf("context %v, eps %v", ctx1.Shape, eps1.Shape)
	}
	diff := func(a, b []float32) float64 {
		d := 0.0
		for i := range a {
			d = math.Max(d, math.Abs(float64(a[i]-b[i])))
		}
		return d
	}
	dc, de := diff(ctx0.F32, ctx1.F32), diff(eps0.F32, eps1.F32)
	t.Logf("LoRA changes the context by %.3g and eps by %.3g", dc, de)
	if dc < 1e-3 || de < 1e-4 {
		t.Errorf("LoRA barely changes the context (%.2e) or eps (%.2e)", dc, de)
	}
	for _, v := range eps1.F32 {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatal("non-finite eps")
		}
	}
}
