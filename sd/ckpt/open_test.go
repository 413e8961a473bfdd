package ckpt_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/device"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

func TestEMASelection(t *testing.T) {
	const w = "model.diffusion_model.input_blocks.0.0.weight"
	if got := ckpt.EMAName(w); got != "model_ema.diffusion_modelinput_blocks00weight" {
		t.Fatalf("EMAName = %s", got)
	}
	src := tensor.MapSource{
		w:                                   tensor.FromF32([]float32{1, 2}, 2),
		"model.diffusion_model.out.2.bias":  tensor.FromF32([]float32{5}, 1),
		ckpt.EMAName(w):                     tensor.FromF32([]float32{10, 20}, 2),
		"model_ema.decay":                   tensor.FromF32([]float32{0.9999}),
		"first_stage_model.quant_conv.bias": tensor.FromF32([]float32{3}, 1),
		"first_stage_model.encoder.conv.b":  tensor.FromF32([]float32{3}, 1),
		"first_stage_model.decoder.conv.b":  tensor.FromF32([]float32{3}, 1),
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "ema.safetensors")
	if err := ckpt.WriteSafetensors(p, src, ckpt.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, use := range []bool{false, true} {
		c, err := ckpt.Open(p, ckpt.Options{UseEMA: use})
		if err != nil {
			t.Fatal(err)
		}
		if !c.HasEMA() || !ckpt.Describe(c).HasEMA {
			t.Error("EMA copies not detected")
		}
		// The UNet's two tensors and the VAE decoder's; not the EMA copies,
		// the VAE encoder or quant_conv.
		if got := ckpt.Describe(c).InferenceBytes; got != 4*(2+1+1) {
			t.Errorf("InferenceBytes = %d, want %d", got, 4*(2+1+1))
		}
		got, _ := c.Get(w)
		want := float32(1)
		if use {
			want = 10
		}
		if got.F32[0] != want {
			t.Errorf("UseEMA=%v: %s[0] = %v, want %v", use, w, got.F32[0], want)
		}
		if b, _ := c.Get("model.diffusion_model.out.2.bias"); b.F32[0] != 5 {
			t.Errorf("UseEMA=%v: a weight without EMA copy reads %v", use, b.F32[0])
		}
		again, _ := c.Get(w)
		if again != got {
			t.Error("Get of the same name built a new tensor")
		}
		c.Close()
	}
	delete(src, ckpt.EMAName(w))
	p2 := filepath.Join(dir, "noema.safetensors")
	if err := ckpt.WriteSafetensors(p2, src, ckpt.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ckpt.Open(p2, ckpt.Options{UseEMA: true}); err == nil || !strings.Contains(err.Error(), "no model_ema") {
		t.Errorf("UseEMA without EMA weights: %v", err)
	}
}

func TestOpenBadInput(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"empty.safetensors": "",
		"lfs.ckpt":          "version https://git-lfs.github.com/spec/v1\noid sha256:4c2b\nsize 4265146304\n",
		"page.safetensors":  "<!doctype html>\n<html><title>Sign in</title></html>",
		"junk.bin":          "\x00\x01\x02\x03 this is not a model at all",
	}
	wants := map[string]string{"empty.safetensors": "is empty", "lfs.ckpt": "Git LFS pointer, not the weights: fetch the real file",
		"page.safetensors": "is an HTML page, not a checkpoint (a failed download?)", "junk.bin": "unknown format"}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		_, err := ckpt.Open(p, ckpt.Options{})
		if err == nil || !strings.Contains(err.Error(), wants[name]) || !strings.Contains(err.Error(), p) || !errors.Is(err, ckpt.ErrFormat) {
			t.Errorf("%s: %v, want %q", name, err, wants[name])
		}
	}
	if _, err := ckpt.Open(filepath.Join(dir, "missing.safetensors"), ckpt.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	// A diffusers folder without its vae/.
	d := filepath.Join(dir, "diff")
	os.MkdirAll(filepath.Join(d, "unet"), 0o755)
	os.WriteFile(filepath.Join(d, "model_index.json"), []byte("{}"), 0o644)
	if _, err := ckpt.Open(d, ckpt.Options{}); err == nil || !strings.Contains(err.Error(), "no vae/ folder") {
		t.Errorf("incomplete diffusers folder: %v", err)
	}
	for _, c := range []string{"vae", "text_encoder"} {
		os.MkdirAll(filepath.Join(d, c), 0o755)
	}
	if _, err := ckpt.Open(d, ckpt.Options{}); err == nil || !strings.Contains(err.Error(), "unet: no weights file") {
		t.Errorf("diffusers folder without weights: %v", err)
	}
}

// TestDiffusersTiny writes the tiny model as a diffusers folder (safetensors
// and .bin weights, fp16 variant file names) and reads it back.
func TestDiffusersTiny(t *testing.T) {
	if _, err := testmodel.DefaultConfigDir(); err != nil {
		t.Skip(err)
	}
	src, err := testmodel.NewSource(testmodel.Options{DType: tensor.F16, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "tiny")
	if err := testmodel.Write(testmodel.Options{DType: tensor.F16, Seed: 3, Layout: "diffusers", Output: out}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors",
		"vae/config.json", "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
		"text_encoder/model.safetensors", "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("missing %s", f)
		}
	}
	c, err := ckpt.Open(filepath.Join(out, "model_index.json"), ckpt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var unet struct {
		BlockOut []int    `json:"block_out_channels"`
		Down     []string `json:"down_block_types"`
		Up       []string `json:"up_block_types"`
		Layers   int      `json:"layers_per_block"`
		Cross    int      `json:"cross_attention_dim"`
		Heads    int      `json:"attention_head_dim"`
	}
	if err := json.Unmarshal(c.Diffusers.Configs["unet"], &unet); err != nil {
		t.Fatal(err)
	}
	if got, _ := json.Marshal(unet); string(got) != `{"block_out_channels":[32,64],"down_block_types":["CrossAttnDownBlock2D","CrossAttnDownBlock2D"],"up_block_types":["CrossAttnUpBlock2D","CrossAttnUpBlock2D"],"layers_per_block":1,"cross_attention_dim":64,"attention_head_dim":8}` {
		t.Errorf("tiny unet config %s", got)
	}
	var te map[string]any
	json.Unmarshal(c.Diffusers.Configs["text_encoder"], &te)
	if te["hidden_size"] != 64.0 || te["num_hidden_layers"] != 2.0 || te["num_attention_heads"] != 1.0 || te["intermediate_size"] != 256.0 {
		t.Errorf("tiny text encoder config %v", te)
	}
	if c.Diffusers.TokenizerDir != filepath.Join(out, "tokenizer") || c.Diffusers.Configs["scheduler"] == nil {
		t.Errorf("tokenizer %q, scheduler config %d bytes", c.Diffusers.TokenizerDir, len(c.Diffusers.Configs["scheduler"]))
	}
	if c.Diffusers.SchedulerConfig != filepath.Join(out, "scheduler", "scheduler_config.json") {
		t.Errorf("scheduler config path %q", c.Diffusers.SchedulerConfig)
	}
	if !strings.Contains(string(c.Diffusers.Configs["scheduler"]), `"beta_schedule": "scaled_linear"`) {
		t.Error("scheduler config not copied")
	}
	if len(c.Diffusers.Unmapped) != 0 {
		t.Errorf("unmapped %v", c.Diffusers.Unmapped)
	}
	// VAE attention: linear on disk, 1x1 conv in ldm names.
	const q = "first_stage_model.decoder.mid.attn_1.q.weight"
	qt, _ := c.Get(q)
	if dt, shape, _ := c.Stored(q); dt != "F16" || !tensor.SameShape(shape, []int{64, 64, 1, 1}) || !tensor.SameShape(qt.Shape, shape) {
		t.Errorf("%s stored %s %v, got %v", q, dt, shape, qt)
	}
	if dn, _ := c.Diffusers.DiffusersName(q); dn != "vae/decoder.mid_block.attentions.0.to_q.weight" {
		t.Errorf("%s read from %s", q, dn)
	}
	if q2, _ := c.Get(q); q2 != qt {
		t.Error("reshaped tensor rebuilt on every Get")
	}

	// .bin weights under fp16 variant names.
	bin := filepath.Join(dir, "bin")
	err = ckpt.WriteDiffusers(bin, src, ckpt.DiffusersWriteOptions{Torch: true, Configs: c.Diffusers.Configs, TokenizerDir: c.Diffusers.TokenizerDir})
	if err != nil {
		t.Fatal(err)
	}
	os.Rename(filepath.Join(bin, "unet/diffusion_pytorch_model.bin"), filepath.Join(bin, "unet/diffusion_pytorch_model.fp16.bin"))
	b, err := ckpt.Open(bin, ckpt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if len(b.Names()) != len(c.Names()) {
		t.Fatalf(".bin folder has %d tensors, safetensors folder %d", len(b.Names()), len(c.Names()))
	}
	for _, n := range c.Names() {
		x, _ := c.Get(n)
		y, ok := b.Get(n)
		if !ok || !tensor.SameShape(x.Shape, y.Shape) || x.DType != y.DType {
			t.Fatalf("%s: %v vs %v", n, x, y)
		}
		for i := range x.Half {
			if x.Half[i] != y.Half[i] {
				t.Fatalf("%s[%d] differs", n, i)
			}
		}
	}
	if !strings.HasSuffix(b.Diffusers.Weights["unet"][0], "diffusion_pytorch_model.fp16.bin") {
		t.Errorf("unet weights from %v", b.Diffusers.Weights["unet"])
	}
}

func TestDescribeSD15(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the 2.1 GB shared SD 1.5 checkpoint")
	}
	c, err := ckpt.Open(testckpt.SD15(t), ckpt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	info := ckpt.Describe(c)
	got := fmt.Sprintf("%s %s %s %d %v %v", info.Layout, info.Family, info.DType, info.Tensors, info.HasEMA, info.Parts)
	if want := "safetensors sd1 F16 1145 false map[ema:2 other:12 text_encoder:197 unet:686 vae:248]"; got != want {
		t.Errorf("Describe = %s, want %s", got, want)
	}
	// 1,066,235,307 weights (mkckpt's count) plus 12 x 1000 schedule values and model_ema.decay.
	if info.Params != 1066235307+12000+1 {
		t.Errorf("params %d", info.Params)
	}
	// What text-to-image loads: SD 1.5's published UNet, text encoder and
	// VAE decoder parameter counts (sd/device) in f16, with the text
	// encoder's 77 position ids stored as int64.
	want := int64(device.SD15UNetParams+device.SD15TextParams-77+device.SD15DecoderParams)*2 + 77*8
	if info.InferenceBytes != want {
		t.Errorf("inference bytes %d, want %d", info.InferenceBytes, want)
	}
	if info.Metadata["seed"] != "1234" {
		t.Errorf("metadata %v", info.Metadata)
	}
	if _, err := ckpt.Open(c.Path, ckpt.Options{UseEMA: true}); err == nil {
		t.Error("UseEMA accepted a checkpoint without EMA weights")
	}
}
