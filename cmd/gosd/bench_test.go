package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
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

// TestBenchProfileTable: with two steps and --profile, gosd bench prints the
// kernel profile of the second step and of the VAE decode, and --json-out
// writes the report with the steady s/step, the ops and the idle-core share.
func TestBenchProfileTable(t *testing.T) {
	model := tinyModel(t, "single", tensor.F16)
	tok := tokenizerDir(t)
	path := filepath.Join(t.TempDir(), "bench.json")
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"bench", "--model", model, "--tokenizer", tok,
		"--size", "64", "--steps", "2", "--kernels=false", "--profile", "--json-out", path}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	for _, want := range []string{"where a step goes", "where the VAE decode goes", "conv2d 3x3", "idle core time"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Runs []struct {
			Steady float64   `json:"steady_s_per_step"`
			StepS  []float64 `json:"step_s"`
			Ops    []struct {
				Kind  string
				Calls int
				S     float64
			}
			Idle float64 `json:"idle_core_share"`
		}
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 1 {
		t.Fatalf("%d runs in %s", len(rep.Runs), b)
	}
	r := rep.Runs[0]
	if !(r.Steady > 0) || len(r.StepS) != 2 || len(r.Ops) == 0 || r.Ops[0].Calls == 0 || r.Idle < 0 || r.Idle >= 1 {
		t.Errorf("run = %+v", r)
	}
}
