package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

// TestBenchJSON runs gosd bench end to end on the tiny model (no kernel
// table) and checks the JSON fields the benchmark report promises.
func TestBenchJSON(t *testing.T) {
	model := tinyModel(t, "single", tensor.F16)
	tok := tokenizerDir(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "--model", model, "--tokenizer", tok,
		"--size", "64", "--steps", "1", "--kernels=false", "--json"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	var rep map[string]any
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v in %s", err, out.String())
	}
	for _, k := range []string{"s_per_step", "text_encode_s", "vae_decode_s", "peak_rss_bytes"} {
		v, ok := rep[k].(float64)
		if !ok || !(v > 0) {
			t.Errorf("%s = %v, want a positive number", k, rep[k])
		}
	}
	runs, _ := rep["runs"].([]any)
	if len(runs) != 1 {
		t.Fatalf("runs = %v", rep["runs"])
	}
	if r := runs[0].(map[string]any); r["width"] != 64.0 || r["steps"] != 1.0 {
		t.Errorf("run = %v", r)
	}
}
