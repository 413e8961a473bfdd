package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// TestInspectLayouts: `gosd inspect` on the tiny model in each layout and
// dtype reports the family, layout, dtype and tensor count, as text and JSON.
func TestInspectLayouts(t *testing.T) {
	specs, err := testmodel.Names(testmodel.Options{Size: "tiny", DType: tensor.F16})
	if err != nil {
		t.Fatal(err)
	}
	// The single-file layouts carry every tensor (buffers included); a
	// diffusers folder only the three networks' weights.
	networks := 0
	for _, s := range specs {
		if strings.HasPrefix(s.Name, "model.diffusion_model.") || strings.HasPrefix(s.Name, "first_stage_model.") ||
			strings.HasPrefix(s.Name, "cond_stage_model.") {
			networks++
		}
	}
	for _, c := range []struct {
		layout, layoutName string
		dt                 tensor.DType
		dtName             string
		tensors            int
	}{
		{"single", "safetensors", tensor.F16, "F16", len(specs)},
		{"single", "safetensors", tensor.BF16, "BF16", len(specs)},
		{"ckpt", "ckpt", tensor.F32, "F32", len(specs)},
		{"ckpt", "ckpt", tensor.BF16, "BF16", len(specs)},
		{"diffusers", "diffusers", tensor.F16, "F16", networks},
		{"diffusers", "diffusers", tensor.F32, "F32", networks},
	} {
		t.Run(c.layout+"-"+c.dtName, func(t *testing.T) {
			path := tinyModel(t, c.layout, c.dt)
			r := runCLI(t, "inspect", path)
			if r.code != 0 {
				t.Fatalf("exit %d:\n%s", r.code, r.stderr)
			}
			for _, w := range []string{
				"path     " + path + "\n",
				"family   Stable Diffusion 1.x (sd1)\n",
				"layout   " + c.layoutName + "\n",
				"dtype    " + c.dtName + " (tensors by dtype: " + c.dtName + " ",
				fmt.Sprintf("tensors  %d (", c.tensors),
				"ema      false",
			} {
				if !strings.Contains(r.stdout, w) {
					t.Errorf("output lacks %q:\n%s", w, r.stdout)
				}
			}
			r = runCLI(t, "inspect", "--json", path)
			if r.code != 0 {
				t.Fatalf("--json: exit %d:\n%s", r.code, r.stderr)
			}
			var info struct {
				Path, Layout, Family, DType string
				Tensors                     int
				Params                      int64
				HasEMA                      bool
				Parts, DTypes               map[string]int
			}
			if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
				t.Fatalf("--json output does not parse: %v\n%s", err, r.stdout)
			}
			if info.Path != path || info.Layout != c.layoutName || info.Family != "sd1" || info.DType != c.dtName ||
				info.Tensors != c.tensors || info.HasEMA {
				t.Errorf("--json = %+v", info)
			}
			if info.Parts["unet"] == 0 || info.Parts["vae"] == 0 || info.Parts["text_encoder"] == 0 {
				t.Errorf("--json parts %v: want unet, vae and text_encoder", info.Parts)
			}
			if info.Params < 1e6 || info.Params > 1e7 {
				t.Errorf("--json params %d: the tiny model has about 5 M", info.Params)
			}
		})
	}
	t.Run("bad", func(t *testing.T) {
		if r := runCLI(t, "inspect"); r.code != 2 || !strings.Contains(r.stderr, "usage: gosd inspect") {
			t.Errorf("no path: exit %d, stderr:\n%s", r.code, r.stderr)
		}
		if r := runCLI(t, "inspect", cliFixture("lfs-pointer.safetensors")); r.code != 1 || !strings.Contains(r.stderr, "Git LFS pointer") {
			t.Errorf("LFS pointer: exit %d, stderr:\n%s", r.code, r.stderr)
		}
		missing := filepath.Join(t.TempDir(), "missing.ckpt")
		if r := runCLI(t, "inspect", missing); r.code != 1 || !strings.Contains(r.stderr, "missing.ckpt") {
			t.Errorf("missing file: exit %d, stderr:\n%s", r.code, r.stderr)
		}
	})
}

// TestTokenizeGolden: `gosd tokenize` gives the golden run's token ids for
// its prompt (../shared/golden/sd15-dev-fox/meta.json tokens_cond).
func TestTokenizeGolden(t *testing.T) {
	tok := tokenizerDir(t)
	b, err := os.ReadFile(filepath.Join(sharedDir(t), "golden", "sd15-dev-fox", "meta.json"))
	if err != nil {
		t.Skipf("golden meta missing: %v", err)
	}
	var meta struct {
		Prompt string `json:"prompt"`
		Tokens []int  `json:"tokens_cond"`
	}
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	if len(meta.Tokens) != 77 {
		t.Fatalf("golden tokens_cond has %d ids, want 77", len(meta.Tokens))
	}
	r := runCLI(t, "tokenize", "--tokenizer", tok, meta.Prompt)
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	want := strings.Trim(fmt.Sprint(meta.Tokens), "[]") + "\n"
	if r.stdout != want {
		t.Errorf("tokenize %q =\n%s\nwant\n%s", meta.Prompt, r.stdout, want)
	}
	// The words may also come as several arguments; --raw drops start, end and padding.
	r = runCLI(t, "tokenize", "--raw", "--tokenizer", tok, strings.Fields(meta.Prompt)[0], strings.Join(strings.Fields(meta.Prompt)[1:], " "))
	end := 1
	for meta.Tokens[end] != 49407 {
		end++
	}
	if want := strings.Trim(fmt.Sprint(meta.Tokens[1:end]), "[]") + "\n"; r.code != 0 || r.stdout != want {
		t.Errorf("tokenize --raw: exit %d, %q, want %q", r.code, r.stdout, want)
	}
	t.Setenv("GOSD_TOKENIZER", "")
	if r := runCLI(t, "tokenize", "a fox"); r.code != 2 || !strings.Contains(r.stderr, "--tokenizer DIR (or $GOSD_TOKENIZER) is required") {
		t.Errorf("no --tokenizer: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	t.Setenv("GOSD_TOKENIZER", tok)
	if r := runCLI(t, "tokenize", "a fox"); r.code != 0 || !strings.HasPrefix(r.stdout, "49406 320 3240 49407") {
		t.Errorf("tokenizer from $GOSD_TOKENIZER: exit %d, %q, stderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, "tokenize", "--tokenizer", tok); r.code != 2 || !strings.Contains(r.stderr, "give the text") {
		t.Errorf("no text: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, "tokenize", "--tokenizer", t.TempDir(), "a fox"); r.code != 1 || !strings.Contains(r.stderr, "vocab.json") {
		t.Errorf("empty tokenizer folder: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	long := strings.Repeat("fox ", 80)
	if r := runCLI(t, "tokenize", "--tokenizer", tok, long); r.code != 0 || !strings.Contains(r.stderr, "truncated") ||
		len(strings.Fields(r.stdout)) != 77 {
		t.Errorf("80-word text: exit %d, %d ids, stderr %q; want 77 ids and a truncation warning",
			r.code, len(strings.Fields(r.stdout)), r.stderr)
	}
}

// TestTestModelCommand: `gosd testmodel` writes a loadable model, and bad
// flags fail without writing anything.
func TestTestModelCommand(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "m.safetensors")
	r := runCLI(t, "testmodel", "--size", "tiny", "--dtype", "bf16", "--output", out)
	if r.code != 0 || r.stdout != out+"\n" {
		t.Fatalf("exit %d, stdout %q:\n%s", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, "inspect", out); !strings.Contains(r.stdout, "dtype    BF16") {
		t.Errorf("inspect of the written model:\n%s", r.stdout)
	}
	for _, c := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"dtype", []string{"--dtype", "f8"}, 2, `--dtype "f8": want f32, f16 or bf16`},
		{"size", []string{"--size", "huge"}, 1, `size "huge": want tiny or full`},
		{"layout", []string{"--layout", "onnx"}, 1, `layout "onnx": want single, ckpt or diffusers`},
		{"family", []string{"--family", "kandinsky"}, 1, `family "kandinsky" is not supported`},
		{"no output", []string{"--output", ""}, 2, "--output is required"},
		{"seed", []string{"--seed", "-1"}, 2, "invalid value"},
		{"unknown flag", []string{"--colour", "red"}, 2, "flag provided but not defined: -colour"},
		{"extra argument", []string{"tiny.safetensors"}, 2, `unexpected argument "tiny.safetensors"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := t.TempDir()
			args := append([]string{"testmodel", "--output", filepath.Join(d, "x.safetensors")}, c.args...)
			r := runCLI(t, args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.want) {
				t.Errorf("exit %d (want %d), stderr:\n%s\nwant %q", r.code, c.code, r.stderr, c.want)
			}
			if left := dirEntries(t, d); len(left) > 0 {
				t.Errorf("folder holds %v after a failed run", left)
			}
		})
	}
}

// TestVAERoundTrip: `gosd vae roundtrip --json` on a real photo with the real
// TAEF2 weights reports the PSNR of the PyTorch reference (34.52 dB) within
// 0.3 dB, and writes the decoded image.
func TestVAERoundTrip(t *testing.T) {
	shared := sharedDir(t)
	enc := filepath.Join(shared, "models", "taef2", "taef2_encoder.pth")
	dec := filepath.Join(shared, "models", "taef2", "taef2_decoder.pth")
	in := filepath.Join(shared, "images", "kodim03-gray256.png")
	for _, p := range []string{enc, dec, in} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("shared material missing: %v", err)
		}
	}
	out := filepath.Join(t.TempDir(), "back.png")
	r := runCLI(t, "vae", "roundtrip", "--encoder", enc, "--decoder", dec, "--input", in, "--output", out, "--json")
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	var res map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("--json output does not parse: %v\n%s", err, r.stdout)
	}
	psnr, ok := res["psnr_db"].(float64)
	if !ok {
		t.Fatalf("no numeric psnr_db in %s", r.stdout)
	}
	if math.Abs(psnr-34.52) > 0.3 {
		t.Errorf("psnr_db %.3f, PyTorch reference 34.52", psnr)
	}
	if res["width"] != 256.0 || res["height"] != 256.0 || res["cropped"] != false || fmt.Sprint(res["latent_shape"]) != "[1 32 32 32]" {
		t.Errorf("json %s: want 256x256, not cropped, latent [1 32 32 32]", r.stdout)
	}
	if img, _ := readPNG(t, out); img.Bounds().Dx() != 256 || img.Bounds().Dy() != 256 {
		t.Errorf("written image %v, want 256x256", img.Bounds())
	}
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"vae"}, 2, "usage: gosd vae roundtrip"},
		{[]string{"vae", "encode"}, 2, "usage: gosd vae roundtrip"},
		{[]string{"vae", "roundtrip", "--input", in}, 2, "--encoder, --decoder and --input are required"},
		{[]string{"vae", "roundtrip", "--encoder", enc, "--decoder", dec, "--input", in, "back.png"}, 2, `unexpected argument "back.png"`},
		{[]string{"vae", "roundtrip", "--encoder", dec, "--decoder", dec, "--input", in}, 1, "encoder"},
		{[]string{"vae", "roundtrip", "--encoder", enc, "--decoder", dec, "--input", cliFixture("prompt-latin1.txt")}, 1, "prompt-latin1.txt"},
	} {
		if r := runCLI(t, c.args...); r.code != c.code || !strings.Contains(r.stderr, c.want) {
			t.Errorf("gosd %v: exit %d (want %d), stderr:\n%s\nwant %q", c.args, r.code, c.code, r.stderr, c.want)
		}
	}
}

// TestVersion prints the release.
func TestVersion(t *testing.T) {
	r := runCLI(t, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "gosd 0.") || !strings.Contains(r.stdout, " go1.") {
		t.Errorf("exit %d, stdout %q", r.code, r.stdout)
	}
}
