package ckpt_test

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

func fullSpecs(t *testing.T) []testmodel.Spec {
	t.Helper()
	specs, err := testmodel.Names(testmodel.Options{Size: "full", DType: tensor.F16})
	if err != nil {
		t.Fatal(err)
	}
	return specs
}

// TestKeyMapSD15 maps every full-size SD 1.5 name to diffusers and back.
func TestKeyMapSD15(t *testing.T) {
	specs := fullSpecs(t)
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
	}
	km, err := ckpt.NewKeyMap(names)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	perComp := map[string]int{}
	var diffNames []string
	for _, n := range names {
		d, ok := km.ToDiffusers(n)
		if !ok {
			if strings.HasPrefix(n, "model.") || strings.HasPrefix(n, "first_stage_model.") || strings.HasPrefix(n, "cond_stage_model.") {
				t.Errorf("%s has no diffusers name", n)
			}
			continue
		}
		if prev, dup := seen[d]; dup {
			t.Errorf("%s and %s both map to %s", prev, n, d)
		}
		seen[d] = n
		diffNames = append(diffNames, d)
		perComp[strings.SplitN(d, "/", 2)[0]]++
		back, ok := km.ToLDM(d)
		if !ok || back != n {
			t.Errorf("%s -> %s -> %s", n, d, back)
		}
	}
	if perComp["unet"] != 686 || perComp["vae"] != 248 || perComp["text_encoder"] != 197 {
		t.Errorf("per component %v, want unet 686 vae 248 text_encoder 197", perComp)
	}
	// The structure derived from diffusers names alone gives the same map.
	km2, err := ckpt.NewKeyMap(diffNames)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range diffNames {
		if back, ok := km2.ToLDM(d); !ok || back != seen[d] {
			t.Errorf("from diffusers names: %s -> %s, want %s", d, back, seen[d])
		}
	}
	// Known pairs (diffusers' own conversion script naming).
	pairs := map[string]string{
		"model.diffusion_model.time_embed.0.weight":                                     "unet/time_embedding.linear_1.weight",
		"model.diffusion_model.input_blocks.0.0.bias":                                   "unet/conv_in.bias",
		"model.diffusion_model.input_blocks.1.0.in_layers.0.weight":                     "unet/down_blocks.0.resnets.0.norm1.weight",
		"model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": "unet/down_blocks.0.attentions.1.transformer_blocks.0.attn2.to_k.weight",
		"model.diffusion_model.input_blocks.3.0.op.weight":                              "unet/down_blocks.0.downsamplers.0.conv.weight",
		"model.diffusion_model.input_blocks.4.0.skip_connection.weight":                 "unet/down_blocks.1.resnets.0.conv_shortcut.weight",
		"model.diffusion_model.input_blocks.11.0.out_layers.3.bias":                     "unet/down_blocks.3.resnets.1.conv2.bias",
		"model.diffusion_model.middle_block.0.emb_layers.1.weight":                      "unet/mid_block.resnets.0.time_emb_proj.weight",
		"model.diffusion_model.middle_block.1.proj_in.weight":                           "unet/mid_block.attentions.0.proj_in.weight",
		"model.diffusion_model.middle_block.2.out_layers.0.bias":                        "unet/mid_block.resnets.1.norm2.bias",
		"model.diffusion_model.output_blocks.2.1.conv.weight":                           "unet/up_blocks.0.upsamplers.0.conv.weight",
		"model.diffusion_model.output_blocks.3.1.norm.weight":                           "unet/up_blocks.1.attentions.0.norm.weight",
		"model.diffusion_model.output_blocks.5.2.conv.bias":                             "unet/up_blocks.1.upsamplers.0.conv.bias",
		"model.diffusion_model.output_blocks.8.2.conv.weight":                           "unet/up_blocks.2.upsamplers.0.conv.weight",
		"model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.2.weight": "unet/up_blocks.3.attentions.2.transformer_blocks.0.ff.net.2.weight",
		"model.diffusion_model.out.0.weight":                                            "unet/conv_norm_out.weight",
		"model.diffusion_model.out.2.bias":                                              "unet/conv_out.bias",
		"first_stage_model.encoder.down.1.block.0.nin_shortcut.weight":                  "vae/encoder.down_blocks.1.resnets.0.conv_shortcut.weight",
		"first_stage_model.encoder.down.2.downsample.conv.bias":                         "vae/encoder.down_blocks.2.downsamplers.0.conv.bias",
		"first_stage_model.encoder.mid.attn_1.q.weight":                                 "vae/encoder.mid_block.attentions.0.to_q.weight",
		"first_stage_model.decoder.mid.attn_1.proj_out.bias":                            "vae/decoder.mid_block.attentions.0.to_out.0.bias",
		"first_stage_model.decoder.mid.attn_1.norm.weight":                              "vae/decoder.mid_block.attentions.0.group_norm.weight",
		"first_stage_model.decoder.mid.block_2.conv1.weight":                            "vae/decoder.mid_block.resnets.1.conv1.weight",
		"first_stage_model.decoder.up.3.upsample.conv.weight":                           "vae/decoder.up_blocks.0.upsamplers.0.conv.weight",
		"first_stage_model.decoder.up.0.block.0.nin_shortcut.bias":                      "vae/decoder.up_blocks.3.resnets.0.conv_shortcut.bias",
		"first_stage_model.decoder.norm_out.bias":                                       "vae/decoder.conv_norm_out.bias",
		"first_stage_model.post_quant_conv.weight":                                      "vae/post_quant_conv.weight",
		"cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight":      "text_encoder/text_model.encoder.layers.11.mlp.fc2.weight",
		"cond_stage_model.transformer.text_model.final_layer_norm.bias":                 "text_encoder/text_model.final_layer_norm.bias",
	}
	for l, d := range pairs {
		if got, ok := km.ToDiffusers(l); !ok || got != d {
			t.Errorf("ToDiffusers(%s) = %s, want %s", l, got, d)
		}
	}
	// Older diffusers VAE attention names read too.
	for old, l := range map[string]string{
		"vae/decoder.mid_block.attentions.0.query.weight":   "first_stage_model.decoder.mid.attn_1.q.weight",
		"vae/encoder.mid_block.attentions.0.proj_attn.bias": "first_stage_model.encoder.mid.attn_1.proj_out.bias",
		"vae/encoder.mid_block.attentions.0.value.weight":   "first_stage_model.encoder.mid.attn_1.v.weight",
	} {
		if got, ok := km.ToLDM(old); !ok || got != l {
			t.Errorf("ToLDM(%s) = %s, want %s", old, got, l)
		}
	}
	for _, n := range []string{"betas", "model_ema.decay", "model.diffusion_model.input_blocks.99", "unet/down_blocks.x"} {
		if d, ok := km.ToDiffusers(n); ok {
			t.Errorf("%s mapped to %s", n, d)
		}
	}
}

// TestKeyMapMatchesRealUNetConfig checks the diffusers UNet/VAE channel
// plan implied by the mapped names against the real SD 1.5 configs.
func TestKeyMapMatchesRealUNetConfig(t *testing.T) {
	var cfg struct {
		BlockOut       []int    `json:"block_out_channels"`
		LayersPerBlock int      `json:"layers_per_block"`
		Down           []string `json:"down_block_types"`
		Up             []string `json:"up_block_types"`
	}
	b, err := os.ReadFile("../../../shared/models/sd15/unet/config.json")
	if err != nil {
		t.Skipf("shared configs missing: %v", err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	specs := fullSpecs(t)
	var names []string
	for _, s := range specs {
		names = append(names, s.Name)
	}
	km, _ := ckpt.NewKeyMap(names)
	shapes := map[string][]int{}
	for _, s := range specs {
		if d, ok := km.ToDiffusers(s.Name); ok {
			shapes[d] = s.Shape
		}
	}
	n := len(cfg.BlockOut)
	for i := 0; i < n; i++ {
		for j := 0; j < cfg.LayersPerBlock; j++ {
			s := shapes[sprintf("unet/down_blocks.%d.resnets.%d.conv2.weight", i, j)]
			if len(s) != 4 || s[0] != cfg.BlockOut[i] {
				t.Errorf("down_blocks.%d.resnets.%d.conv2 shape %v, want %d outputs", i, j, s, cfg.BlockOut[i])
			}
			_, hasAttn := shapes[sprintf("unet/down_blocks.%d.attentions.%d.proj_in.weight", i, j)]
			if hasAttn != (cfg.Down[i] == "CrossAttnDownBlock2D") {
				t.Errorf("down block %d (%s): attention present %v", i, cfg.Down[i], hasAttn)
			}
		}
		for j := 0; j <= cfg.LayersPerBlock; j++ {
			s := shapes[sprintf("unet/up_blocks.%d.resnets.%d.conv2.weight", i, j)]
			if len(s) != 4 || s[0] != cfg.BlockOut[n-1-i] {
				t.Errorf("up_blocks.%d.resnets.%d.conv2 shape %v, want %d outputs", i, j, s, cfg.BlockOut[n-1-i])
			}
			_, hasAttn := shapes[sprintf("unet/up_blocks.%d.attentions.%d.proj_in.weight", i, j)]
			if hasAttn != (cfg.Up[i] == "CrossAttnUpBlock2D") {
				t.Errorf("up block %d (%s): attention present %v", i, cfg.Up[i], hasAttn)
			}
		}
		_, hasUp := shapes[sprintf("unet/up_blocks.%d.upsamplers.0.conv.weight", i)]
		if hasUp != (i < n-1) {
			t.Errorf("up block %d: upsampler present %v", i, hasUp)
		}
	}
}

func sprintf(format string, args ...any) string { return fmt.Sprintf(format, args...) }

// TestKeyMapSDXLStructure checks the structure-derived map on the SDXL UNet
// block plan (3 levels, 2 resnets each, no attention at level 0, deep
// transformers, label_emb) and SDXL's first text encoder prefix.
func TestKeyMapSDXLStructure(t *testing.T) {
	const P = "model.diffusion_model."
	names := []string{P + "input_blocks.0.0.weight", P + "label_emb.0.0.weight", P + "label_emb.0.2.bias",
		"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"}
	depth := []int{0, 2, 10}
	for l := 0; l < 3; l++ {
		for j := 0; j < 2; j++ {
			n := 1 + l*3 + j
			names = append(names, sprintf("%sinput_blocks.%d.0.in_layers.0.weight", P, n))
			for k := 0; k < depth[l]; k++ {
				names = append(names, sprintf("%sinput_blocks.%d.1.transformer_blocks.%d.attn1.to_q.weight", P, n, k))
			}
		}
		if l < 2 {
			names = append(names, sprintf("%sinput_blocks.%d.0.op.weight", P, 1+l*3+2))
		}
	}
	for u := 0; u < 3; u++ {
		attn := depth[2-u] > 0
		for j := 0; j < 3; j++ {
			n := u*3 + j
			names = append(names, sprintf("%soutput_blocks.%d.0.skip_connection.weight", P, n))
			if attn {
				names = append(names, sprintf("%soutput_blocks.%d.1.proj_in.weight", P, n))
			}
			if j == 2 && u < 2 {
				sub := 1
				if attn {
					sub = 2
				}
				names = append(names, sprintf("%soutput_blocks.%d.%d.conv.weight", P, n, sub))
			}
		}
	}
	km, err := ckpt.NewKeyMap(names)
	if err != nil {
		t.Fatal(err)
	}
	var diff []string
	back := map[string]string{}
	for _, n := range names {
		d, ok := km.ToDiffusers(n)
		if !ok {
			t.Fatalf("%s has no diffusers name", n)
		}
		diff = append(diff, d)
		back[d] = n
	}
	km2, err := ckpt.NewKeyMap(diff)
	if err != nil {
		t.Fatal(err)
	}
	for d, n := range back {
		if got, ok := km2.ToLDM(d); !ok || got != n {
			t.Errorf("%s -> %s, want %s", d, got, n)
		}
	}
	for l, d := range map[string]string{
		P + "input_blocks.3.0.op.weight":                                         "unet/down_blocks.0.downsamplers.0.conv.weight",
		P + "input_blocks.4.1.transformer_blocks.1.attn1.to_q.weight":            "unet/down_blocks.1.attentions.0.transformer_blocks.1.attn1.to_q.weight",
		P + "input_blocks.8.1.transformer_blocks.9.attn1.to_q.weight":            "unet/down_blocks.2.attentions.1.transformer_blocks.9.attn1.to_q.weight",
		P + "output_blocks.2.2.conv.weight":                                      "unet/up_blocks.0.upsamplers.0.conv.weight",
		P + "output_blocks.5.2.conv.weight":                                      "unet/up_blocks.1.upsamplers.0.conv.weight",
		P + "output_blocks.8.0.skip_connection.weight":                           "unet/up_blocks.2.resnets.2.conv_shortcut.weight",
		P + "label_emb.0.2.bias":                                                 "unet/add_embedding.linear_2.bias",
		"conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": "text_encoder/text_model.final_layer_norm.weight",
	} {
		if got, _ := km.ToDiffusers(l); got != d {
			t.Errorf("ToDiffusers(%s) = %s, want %s", l, got, d)
		}
	}
}
