package sd

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// writeTestLora writes a kohya LoRA (rank 4, alpha 4) with one module per
// name: mods maps a module name to its [in, out] widths.
func writeTestLora(t *testing.T, path string, mods map[string][2]int) {
	t.Helper()
	m := tensor.MapSource{}
	i := 0
	for name, io := range mods {
		i++
		down, up := tensor.New(4, io[0]), tensor.New(io[1], 4)
		for j := range down.F32 {
			down.F32[j] = float32(math.Sin(float64(i)*3.1+float64(j)*0.37)) * 0.5
		}
		for j := range up.F32 {
			up.F32[j] = float32(math.Cos(float64(i)*1.7+float64(j)*0.53)) * 0.5
		}
		m[name+".lora_down.weight"], m[name+".lora_up.weight"] = down, up
		m[name+".alpha"] = tensor.FromF32([]float32{4})
	}
	if err := ckpt.WriteSafetensors(path, m, ckpt.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// TestFamilyLora: on the tiny SD 2.x and SDXL models, a LoRA on the text
// encoder(s) only (SD 2.x: an OpenCLIP q_proj, merged into the fused
// in_proj; SDXL: a te1 and a te2 q_proj) and one on a UNet attention
// projection each change the image; an unknown module is reported by name;
// a prompt without the tag gives the base image again, pixel for pixel;
// in the single-file and the diffusers layout.
func TestFamilyLora(t *testing.T) {
	for _, fam := range []struct {
		name, pred string
		loras      map[string]map[string][2]int // LoRA file -> its modules
	}{
		{"sd21", "v", map[string]map[string][2]int{
			"te": {"lora_te_text_model_encoder_layers_0_self_attn_q_proj": {64, 64}},
			"un": {"lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": {64, 64}}}},
		{"sdxl", "eps", map[string]map[string][2]int{
			"te1": {"lora_te1_text_model_encoder_layers_0_self_attn_q_proj": {64, 64}, "lora_te1_text_model_encoder_layers_0_mlp_fc1": {64, 256}},
			"te2": {"lora_te2_text_model_encoder_layers_0_self_attn_q_proj": {128, 128}},
			"un":  {"lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q": {128, 128}}}},
	} {
		for _, layout := range []string{"single", "diffusers"} {
			t.Run(fam.name+"/"+layout, func(t *testing.T) {
				path := writeFamily(t, fam.name, layout)
				dir := t.TempDir()
				pred := fam.pred
				if layout == "diffusers" {
					pred = "" // from scheduler_config.json
				}
				fam.loras["un"]["lora_unet_input_blocks_99_1_transformer_blocks_0_attn1_to_q"] = [2]int{64, 64}
				for name, mods := range fam.loras {
					writeTestLora(t, filepath.Join(dir, name+".safetensors"), mods)
				}
				var logs bytes.Buffer
				tok := filepath.Join(testckpt.SharedDir(t), "models", "sd15", "tokenizer")
				p, err := Load(context.Background(), path, Options{Tokenizer: tok, Prediction: pred, LoraDir: dir,
					Logger: slog.New(slog.NewTextHandler(&logs, nil))})
				if err != nil {
					t.Fatal(err)
				}
				defer p.Close()
				gen := func(tag string) []uint8 {
					t.Helper()
					req := familyRequest()
					req.Prompt += tag
					res, err := p.Generate(context.Background(), req)
					if err != nil {
						t.Fatal(err)
					}
					return pixels(res.Image)
				}
				base := gen("")
				withLora := map[string][]uint8{}
				for _, name := range []string{"te", "te1", "te2", "un"} {
					if fam.loras[name] != nil {
						// Strength 10: the tiny random model's attention is weak.
						withLora[name] = gen(" <lora:" + name + ":10>")
					}
				}
				again := gen("")
				differ := func(a, b []uint8) int {
					n := 0
					for i := range a {
						if a[i] != b[i] {
							n++
						}
					}
					return n
				}
				for name, img := range withLora {
					d := differ(base, img)
					t.Logf("%s: LoRA %s changes %d of %d bytes", fam.name, name, d, len(base))
					if d < len(base)/100 {
						t.Errorf("LoRA %s barely changes the image: %d of %d bytes", name, d, len(base))
					}
				}
				if d := differ(base, again); d != 0 {
					t.Errorf("prompt without LoRA after a LoRA: %d bytes differ from the base image", d)
				}
				if !strings.Contains(logs.String(), "lora_unet_input_blocks_99_1_transformer_blocks_0_attn1_to_q") {
					t.Errorf("unknown module not reported; log:\n%s", logs.String())
				}
				if strings.Count(logs.String(), "LoRA tensor not applied") != 1 {
					t.Errorf("want exactly one unmatched-module warning; log:\n%s", logs.String())
				}
			})
		}
	}
}
