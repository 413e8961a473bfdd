package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// TestInspectLora checks that gosd inspect --lora names the LoRA modules that
// match the model and those that match nothing.
func TestInspectLora(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "tiny.safetensors")
	if err := testmodel.Write(testmodel.Options{Size: "tiny", DType: tensor.F16, Output: model, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	const good = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
	const bad = "lora_unet_down_blocks_7_attentions_0_transformer_blocks_0_attn1_to_q"
	src := tensor.MapSource{}
	for _, k := range []string{good, bad} {
		src[k+".lora_down.weight"] = tensor.New(4, 32)
		src[k+".lora_up.weight"] = tensor.New(32, 4)
	}
	lp := filepath.Join(dir, "style.safetensors")
	if err := ckpt.WriteSafetensors(lp, src, ckpt.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"inspect", "--lora", lp, model}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	text := out.String()
	if !strings.Contains(text, "1 of 2 modules match") || !strings.Contains(text, "unmatched "+bad) {
		t.Fatalf("output:\n%s", text)
	}
	out.Reset()
	if code := run(context.Background(), []string{"inspect", "--json", "--lora", lp, model}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep struct {
		Family string
		Loras  []loraMatch `json:"loras"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	want := "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
	if rep.Family != "sd1" || len(rep.Loras) != 1 || rep.Loras[0].Matched[good] != want {
		t.Fatalf("json: %+v", rep)
	}
}
