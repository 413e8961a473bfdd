package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gosd/gosd/sd"
	"github.com/gosd/gosd/sd/imageio"
)

func runGenerate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	d := sd.DefaultRequest()
	fs := newFlags("generate", stderr)
	model := fs.String("model", "", "checkpoint file (.safetensors, .ckpt) or diffusers folder")
	prompt := fs.String("prompt", "", "prompt text")
	promptFile := fs.String("prompt-file", "", "read the prompt from this UTF-8 text file")
	negative := fs.String("negative", "", "negative prompt")
	negativeFile := fs.String("negative-file", "", "read the negative prompt from this UTF-8 text file")
	width := fs.Int("width", 0, "image width in pixels, a multiple of 8 (default: the model's native size, 512, 768 for SD 2.x v-models, 1024 for SDXL)")
	height := fs.Int("height", 0, "image height in pixels, a multiple of 8 (default: as --width)")
	steps := fs.Int("steps", d.Steps, "sampling steps")
	cfg := fs.Float64("cfg", d.CFG, "classifier-free guidance scale")
	sampler := fs.String("sampler", d.Sampler, "sampler: "+strings.Join(sd.Samplers, ", "))
	schedule := fs.String("schedule", d.Schedule, "sigma schedule: "+strings.Join(sd.Schedules, ", "))
	seed := fs.Int64("seed", -1, "noise seed (negative: random, logged)")
	clipSkip := fs.Int("clip-skip", d.ClipSkip, "CLIP layers to skip from the end (1 = none)")
	rngKind := fs.String("rng", d.RNG, "noise generator: cuda (AUTOMATIC1111) or cpu (ComfyUI)")
	output := fs.String("output", "out.png", "output PNG path")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	tokenizer := fs.String("tokenizer", "", "folder with the CLIP tokenizer's vocab.json and merges.txt")
	embDir := fs.String("embeddings-dir", "", "folder of textual-inversion embeddings used by name in prompts")
	loraDir := fs.String("lora-dir", "", "folder of LoRA files used by <lora:name:weight> prompt tags")
	ema := fs.Bool("ema", false, "use the EMA copy of the UNet weights when the file has one")
	backend := fs.String("backend", "cpu", "compute backend: cpu, cuda (cuda builds) or ref (slow pure-Go reference)")
	gpu := fs.Int("device", 0, "GPU index for --backend cuda (see gosd devices)")
	precision := fs.String("precision", "", "CPU precision: f32 (reference) or bf16 (AVX512-BF16 products and Winograd convolutions, about 2.2x faster); default $GOSD_PRECISION, else f32")
	vaePath := fs.String("vae", "", "use this VAE file instead of the checkpoint's (original or diffusers names)")
	vaeF32 := fs.Bool("vae-f32", false, "decode in f32 (with --precision bf16, or 16-bit VAE weights on cuda)")
	prediction := fs.String("prediction", "", "override the model's prediction type: eps or v (default: detected)")
	verbose := fs.Bool("v", false, "verbose logs")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 { // e.g. an unquoted prompt: the words would be dropped silently
		return usagef("unexpected argument %q: give the prompt as --prompt \"...\" (quoted)", pos[0])
	}
	if *model == "" {
		return usagef("--model is required")
	}
	if *prompt != "" && *promptFile != "" {
		return usagef("give --prompt or --prompt-file, not both")
	}
	if *promptFile != "" {
		if *prompt, err = readTextFile(*promptFile); err != nil {
			return err
		}
	}
	if *negativeFile != "" {
		if *negative, err = readTextFile(*negativeFile); err != nil {
			return err
		}
	}
	// The SDK reads zero as "use the default"; on the command line a zero or
	// negative value given explicitly is a mistake.
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, f := range []struct {
		name string
		v    float64
	}{{"width", float64(*width)}, {"height", float64(*height)}, {"steps", float64(*steps)},
		{"cfg", *cfg}, {"clip-skip", float64(*clipSkip)}} {
		if f.v <= 0 && (set[f.name] || (f.name != "width" && f.name != "height")) {
			return usagef("--%s %g: must be positive", f.name, f.v)
		}
	}
	if (*width == 0) != (*height == 0) { // one side given: square
		*width, *height = max(*width, *height), max(*width, *height)
	}
	if !strings.EqualFold(filepath.Ext(*output), ".png") {
		return usagef("--output %q: only .png output is supported", *output)
	}
	if p := *precision; p != "" && p != "f32" && p != "bf16" {
		return usagef("--precision %q: want f32 or bf16", p)
	}
	if err := checkOutput(*output); err != nil {
		return err
	}
	req := sd.Request{
		Prompt: *prompt, Negative: *negative, Width: *width, Height: *height, Steps: *steps,
		CFG: *cfg, Sampler: *sampler, Schedule: *schedule, Seed: *seed, ClipSkip: *clipSkip, RNG: *rngKind,
	}
	// Validate before the (slow) model load so bad flags fail at once.
	if err := sd.Validate(req); err != nil {
		return err
	}
	if *backend == "cuda" {
		if !slices.Contains(sd.Backends(), "cuda") {
			_, err := sd.NewBackend("cuda", 0) // says how to build it
			return err
		}
		if err := checkGPU(*gpu, max(req.Width, 512), max(req.Height, 512), *model, *ema); err != nil {
			return err
		}
	}
	log := newLogger(stderr, *verbose)
	opts := sd.Options{Backend: *backend, Device: *gpu, Threads: *threads, UseEMA: *ema, Tokenizer: *tokenizer, Logger: log,
		EmbeddingsDir: *embDir, LoraDir: *loraDir, Prediction: *prediction,
		Precision: *precision, VAE: *vaePath, VAEF32: *vaeF32}
	start := time.Now()
	p, err := sd.Load(ctx, *model, opts)
	if err != nil {
		return err
	}
	defer p.Close()
	log.Info("model loaded", "model", *model, "backend", p.BackendName(), "elapsed", time.Since(start).Round(time.Millisecond))

	bar := isTerminal(stderr)
	req.Progress = func(pr sd.Progress) {
		if bar {
			drawBar(stderr, pr)
			return
		}
		log.Info("step", "step", pr.Step, "steps", pr.Steps, "elapsed", pr.Elapsed.Round(time.Millisecond))
	}
	res, err := p.Generate(ctx, req)
	if bar {
		fmt.Fprintln(stderr)
	}
	if err != nil {
		return err
	}
	text := imageio.TextChunk{Key: "parameters", Value: res.Params.Infotext()}
	if err := imageio.WritePNG(*output, res.Image, text); err != nil {
		return err
	}
	log.Info("done", "output", *output, "seed", res.Params.Seed,
		"text_encode", res.Timings.TextEncode.Round(time.Millisecond),
		"s_per_step", fmt.Sprintf("%.3f", res.Timings.PerStep.Seconds()),
		"vae_decode", res.Timings.VAEDecode.Round(time.Millisecond),
		"total", time.Since(start).Round(time.Millisecond))
	fmt.Fprintln(stdout, *output)
	return nil
}

// readTextFile reads a prompt file, which must be UTF-8 text. A leading
// byte-order mark (Windows editors write one) is dropped, as the tokenizer
// would read it as three junk tokens, and CRLF line ends become LF.
func readTextFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("prompt file %s is not UTF-8 text", path)
	}
	s := strings.ReplaceAll(strings.TrimPrefix(string(b), "\ufeff"), "\r\n", "\n")
	return strings.TrimRight(s, "\r\n"), nil
}

// checkOutput fails before the slow load and sampling when the PNG could not
// be written: its folder is missing or not writable, or path is a folder.
func checkOutput(path string) error {
	dir := filepath.Dir(path)
	if st, err := os.Stat(dir); err != nil {
		return fmt.Errorf("output folder: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("output folder %s is not a folder", dir)
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return fmt.Errorf("--output %s is a folder", path)
	}
	f, err := os.CreateTemp(dir, ".gosd-write-check-*")
	if err != nil {
		return fmt.Errorf("output folder %s is not writable: %w", dir, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// drawBar redraws a one-line progress bar.
func drawBar(w io.Writer, p sd.Progress) {
	const width = 30
	n := width * p.Step / max(p.Steps, 1)
	per := ""
	if p.Step > 0 {
		per = fmt.Sprintf(" %.2fs/step", p.Elapsed.Seconds()/float64(p.Step))
	}
	fmt.Fprintf(w, "\r[%s%s] %d/%d%s ", strings.Repeat("=", n), strings.Repeat(" ", width-n), p.Step, p.Steps, per)
}
