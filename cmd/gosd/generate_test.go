package main

import (
	"context"
	"image"
	"image/draw"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd"
	"github.com/gosd/gosd/sd/imageio"
	"github.com/gosd/gosd/sd/tensor"
)

// readPNG decodes a PNG and returns it as NRGBA with its text chunks.
func readPNG(t *testing.T, path string) (*image.NRGBA, map[string]string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunks, err := imageio.ReadText(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	text := map[string]string{}
	for _, c := range chunks {
		text[c.Key] = c.Value
	}
	img, err := imageio.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return toNRGBA(img), text
}

func toNRGBA(img image.Image) *image.NRGBA {
	out := image.NewNRGBA(image.Rect(0, 0, img.Bounds().Dx(), img.Bounds().Dy()))
	draw.Draw(out, out.Bounds(), img, img.Bounds().Min, draw.Src)
	return out
}

// TestGeneratePNG runs `gosd generate` on the tiny model and checks the PNG:
// its size, its pixels (identical to the SDK's for the same request), and
// the AUTOMATIC1111 "parameters" text chunk.
func TestGeneratePNG(t *testing.T) {
	tok := tokenizerDir(t)
	model := tinyModel(t, "single", tensor.F16)
	dir := t.TempDir()
	out := filepath.Join(dir, "fox.png")
	prompt, negative := "a fox, red: bright", "blurry, dark"
	r := runCLI(t, "generate", "--model", model, "--tokenizer", tok, "--prompt", prompt, "--negative", negative,
		"--width", "40", "--height", "32", "--steps", "2", "--cfg", "5.5", "--seed", "42", "--output", out)
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	if r.stdout != out+"\n" {
		t.Errorf("stdout = %q, want the output path", r.stdout)
	}
	// Not a terminal: slog lines, one per step.
	for _, w := range []string{`msg="model loaded"`, "msg=step step=1 steps=2", "msg=step step=2 steps=2", "msg=done", "seed=42"} {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "\r[") {
		t.Errorf("progress bar drawn on a non-terminal:\n%q", r.stderr)
	}
	if left := dirEntries(t, dir); len(left) != 1 || left[0] != "fox.png" {
		t.Errorf("output folder holds %v, want only fox.png (no temporary files)", left)
	}
	img, text := readPNG(t, out)
	if b := img.Bounds(); b.Dx() != 40 || b.Dy() != 32 {
		t.Fatalf("image is %dx%d, want 40x32", b.Dx(), b.Dy())
	}
	info, ok := text["parameters"]
	if !ok {
		t.Fatalf("no parameters chunk; text chunks: %v", text)
	}
	want := prompt + "\nNegative prompt: " + negative + "\nSteps: 2, Sampler: Euler a, CFG scale: 5.5, Seed: 42, Size: 40x32, Model: tiny.safetensors, Version: gosd " + sd.Version
	if info != want {
		t.Errorf("parameters =\n%q\nwant\n%q", info, want)
	}
	kv := sd.ParseInfotext(info)
	for k, v := range map[string]string{"Prompt": prompt, "Negative prompt": negative, "Steps": "2",
		"Sampler": "Euler a", "CFG scale": "5.5", "Seed": "42", "Size": "40x32", "Model": "tiny.safetensors"} {
		if kv[k] != v {
			t.Errorf("parsed %q = %q, want %q", k, kv[k], v)
		}
	}

	// The SDK makes the same pixels for the same request.
	p, err := sd.Load(context.Background(), model, sd.Options{Tokenizer: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	res, err := p.Generate(context.Background(), sd.Request{Prompt: prompt, Negative: negative, Width: 40, Height: 32,
		Steps: 2, CFG: 5.5, Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	if sdk := toNRGBA(res.Image); string(sdk.Pix) != string(img.Pix) {
		t.Errorf("CLI and SDK images differ for the same request")
	}
	if res.Params.Infotext() != info {
		t.Errorf("SDK infotext %q, CLI wrote %q", res.Params.Infotext(), info)
	}
}

// TestGeneratePromptFileAndRandomSeed: a multi-line prompt file survives the
// infotext round trip; --seed -1 picks a seed that is reported in the
// infotext and reproduces the image when given back.
func TestGeneratePromptFileAndRandomSeed(t *testing.T) {
	tok := tokenizerDir(t)
	model := tinyModel(t, "single", tensor.F16)
	dir := t.TempDir()
	out := filepath.Join(dir, "a.png")
	r := runCLI(t, "generate", "--model", model, "--tokenizer", tok, "--prompt-file", cliFixture("prompt-multiline.txt"),
		"--width", "16", "--height", "16", "--steps", "2", "--sampler", "dpmpp_2m", "--schedule", "karras",
		"--cfg", "1", "--output", out)
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	img, text := readPNG(t, out)
	kv := sd.ParseInfotext(text["parameters"])
	if want := "a watercolor painting of a fox,\nin a snowy forest: at dawn"; kv["Prompt"] != want {
		t.Errorf("prompt read back %q, want %q", kv["Prompt"], want)
	}
	if _, ok := kv["Negative prompt"]; ok {
		t.Errorf("infotext has a negative prompt line: %q", text["parameters"])
	}
	if kv["Sampler"] != "DPM++ 2M" || kv["Schedule type"] != "Karras" || kv["CFG scale"] != "1" {
		t.Errorf("sampler/schedule/cfg read back %q/%q/%q, want DPM++ 2M/Karras/1", kv["Sampler"], kv["Schedule type"], kv["CFG scale"])
	}
	seed, err := strconv.ParseInt(kv["Seed"], 10, 64)
	if err != nil || seed < 0 || seed >= 1<<32 {
		t.Fatalf("random seed %q: want an integer in [0, 2^32)", kv["Seed"])
	}
	if !regexp.MustCompile(`msg=done .*seed=` + kv["Seed"] + ` `).MatchString(r.stderr) {
		t.Errorf("log does not report seed %s:\n%s", kv["Seed"], r.stderr)
	}
	out2 := filepath.Join(dir, "b.png")
	r = runCLI(t, "generate", "--model", model, "--tokenizer", tok, "--prompt-file", cliFixture("prompt-multiline.txt"),
		"--width", "16", "--height", "16", "--steps", "2", "--sampler", "dpmpp_2m", "--schedule", "karras",
		"--cfg", "1", "--seed", kv["Seed"], "--output", out2)
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	img2, _ := readPNG(t, out2)
	if string(img.Pix) != string(img2.Pix) {
		t.Errorf("the reported seed %s does not reproduce the image", kv["Seed"])
	}
}

// TestGenerateOverwritesAtomically: an existing output is replaced whole, and
// a cancelled run leaves the old file untouched.
func TestGenerateOverwritesAtomically(t *testing.T) {
	tok := tokenizerDir(t)
	model := tinyModel(t, "single", tensor.F16)
	dir := t.TempDir()
	out := filepath.Join(dir, "o.png")
	if err := os.WriteFile(out, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := runCLIContext(t, ctx, "generate", "--model", model, "--tokenizer", tok, "--prompt", "a fox",
		"--width", "16", "--height", "16", "--steps", "2", "--seed", "3", "--output", out)
	if r.code != 130 || !strings.Contains(r.stderr, "interrupted") {
		t.Errorf("cancelled run: exit %d, stderr:\n%s\nwant 130 and 'interrupted'", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(out); string(b) != "old" {
		t.Errorf("cancelled run changed the existing output")
	}
	r = runCLI(t, "generate", "--model", model, "--tokenizer", tok, "--prompt", "a fox",
		"--width", "16", "--height", "16", "--steps", "2", "--seed", "3", "--output", out)
	if r.code != 0 {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	if img, _ := readPNG(t, out); img.Bounds().Dx() != 16 {
		t.Errorf("overwritten image is %v", img.Bounds())
	}
	if left := dirEntries(t, dir); len(left) != 1 {
		t.Errorf("output folder holds %v, want only o.png", left)
	}
}

// TestReadTextFile: prompt files lose a UTF-8 byte-order mark and trailing
// line ends, and CRLF becomes LF; other bytes are kept.
func TestReadTextFile(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct{ in, want string }{
		{"a fox\n", "a fox"},
		{"\ufeffa fox\r\n", "a fox"},
		{"\ufeffa fox,\r\nin the snow\r\n\r\n", "a fox,\nin the snow"},
		{"  spaced \tprompt  ", "  spaced \tprompt  "},
		{"a \ufeff inside", "a \ufeff inside"},
		{"", ""},
	} {
		p := filepath.Join(dir, "p.txt")
		if err := os.WriteFile(p, []byte(c.in), 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := readTextFile(p)
		if err != nil || got != c.want {
			t.Errorf("readTextFile(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}
