package sd

import (
	"context"
	"errors"
	"fmt"
	"image"
	"image/draw"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/rng"
	"github.com/gosd/gosd/sd/sample"
	"github.com/gosd/gosd/sd/tensor"
)

// tinyTokenizer is the real SD 1.5 CLIP tokenizer folder.
func tinyTokenizer(t *testing.T) string {
	t.Helper()
	return filepath.Join(testckpt.SharedDir(t), "models", "sd15", "tokenizer")
}

// loadTiny writes the tiny random SD 1.5 model in layout/dtype and loads it.
func loadTiny(t *testing.T, layout string, dt tensor.DType) *Pipeline {
	t.Helper()
	tok := tinyTokenizer(t)
	path := testckpt.Tiny(t, layout, dt)
	opts := Options{Tokenizer: tok}
	if layout == "diffusers" {
		opts.Tokenizer = "" // the folder's own
		t.Setenv("GOSD_TOKENIZER", "")
	}
	p, err := Load(context.Background(), path, opts)
	if err != nil {
		t.Fatalf("Load %s %s: %v", layout, dt, err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// nrgba returns img's pixels as NRGBA bytes.
func nrgba(img image.Image) []byte {
	out := image.NewNRGBA(image.Rect(0, 0, img.Bounds().Dx(), img.Bounds().Dy()))
	draw.Draw(out, out.Bounds(), img, img.Bounds().Min, draw.Src)
	return out.Pix
}

// distinctPixels counts the distinct RGB colours of img (a sanity check that
// the image is not flat).
func distinctPixels(img image.Image) int {
	seen := map[[3]byte]bool{}
	pix := nrgba(img)
	for i := 0; i+3 < len(pix); i += 4 {
		seen[[3]byte{pix[i], pix[i+1], pix[i+2]}] = true
	}
	return len(seen)
}

func gen(t *testing.T, p *Pipeline, r Request) *Result {
	t.Helper()
	res, err := p.Generate(context.Background(), r)
	if err != nil {
		t.Fatalf("Generate %+v: %v", r, err)
	}
	return res
}

// TestTinyGenerate exercises Generate on the tiny model: sizes, determinism,
// every sampler and schedule, CFG 1, progress, cancellation, bad requests
// and Close.
func TestTinyGenerate(t *testing.T) {
	p := loadTiny(t, "single", tensor.F16)
	base := Request{Prompt: "a watercolor painting of a fox", Negative: "blurry", Width: 32, Height: 32, Steps: 2, Seed: 42}

	var ref *Result
	t.Run("size and params", func(t *testing.T) {
		ref = gen(t, p, base)
		if b := ref.Image.Bounds(); b.Dx() != 32 || b.Dy() != 32 {
			t.Fatalf("image %v, want 32x32", b)
		}
		if n := distinctPixels(ref.Image); n < 16 {
			t.Errorf("only %d distinct colours: a flat image", n)
		}
		want := Params{Prompt: base.Prompt, Negative: base.Negative, Steps: 2, Sampler: "euler_a", Schedule: "normal",
			CFG: 7, Seed: 42, Width: 32, Height: 32, ClipSkip: 1, RNG: "cuda", Model: "tiny.safetensors", Backend: p.BackendName()}
		if ref.Params != want {
			t.Errorf("params %+v\nwant %+v", ref.Params, want)
		}
		if ref.Timings.Sampling <= 0 || ref.Timings.VAEDecode <= 0 || ref.Timings.PerStep != ref.Timings.Sampling/2 {
			t.Errorf("timings %+v", ref.Timings)
		}
	})
	if ref == nil {
		t.FailNow()
	}

	t.Run("determinism", func(t *testing.T) {
		again := gen(t, p, base)
		if string(nrgba(again.Image)) != string(nrgba(ref.Image)) {
			t.Errorf("same seed, different pixels")
		}
		other := base
		other.Seed = 43
		if string(nrgba(gen(t, p, other).Image)) == string(nrgba(ref.Image)) {
			t.Errorf("seeds 42 and 43 gave identical pixels")
		}
		other = base
		other.Prompt = "a photo of a red car"
		if string(nrgba(gen(t, p, other).Image)) == string(nrgba(ref.Image)) {
			t.Errorf("different prompts gave identical pixels")
		}
		other = base
		other.RNG = "cpu"
		if string(nrgba(gen(t, p, other).Image)) == string(nrgba(ref.Image)) {
			t.Errorf("cuda and cpu noise gave identical pixels")
		}
	})

	t.Run("samplers and schedules", func(t *testing.T) {
		// Documented aliases: "ddim" (eta 0) is the Euler update and
		// "discrete" is "normal"; they must give the same pixels, every
		// other combination different ones.
		canon := func(sampler, schedule string) string {
			if sampler == "ddim" {
				sampler = "euler"
			}
			if schedule == "discrete" {
				schedule = "normal"
			}
			return sampler + "/" + schedule
		}
		seen := map[string]string{}
		byName := map[string]string{}
		run := func(sampler, schedule string) {
			r := base
			r.Width, r.Height, r.Steps, r.Sampler, r.Schedule = 16, 16, 3, sampler, schedule
			res := gen(t, p, r)
			if b := res.Image.Bounds(); b.Dx() != 16 || b.Dy() != 16 {
				t.Errorf("%s/%s: image %v", sampler, schedule, b)
			}
			if res.Params.Sampler != sampler || res.Params.Schedule != schedule {
				t.Errorf("%s/%s: params say %s/%s", sampler, schedule, res.Params.Sampler, res.Params.Schedule)
			}
			key, name := string(nrgba(res.Image)), canon(sampler, schedule)
			if prev, ok := byName[name]; ok {
				if prev != key {
					t.Errorf("%s/%s differs from its alias %s", sampler, schedule, name)
				}
				return
			}
			if prev, ok := seen[key]; ok {
				t.Errorf("%s/%s gave the same pixels as %s", sampler, schedule, prev)
			}
			seen[key], byName[name] = name, key
		}
		for _, s := range Samplers {
			run(s, "normal")
		}
		for _, sc := range Schedules {
			if sc != "normal" {
				run("euler", sc)
			}
		}
		if len(Samplers) < 4 || len(Schedules) < 2 {
			t.Errorf("Samplers %v, Schedules %v: too few", Samplers, Schedules)
		}
		// Names are case-insensitive.
		r := base
		r.Width, r.Height, r.Sampler, r.Schedule = 16, 16, "Euler_A", "Karras"
		if res := gen(t, p, r); res.Params.Sampler != "euler_a" || res.Params.Schedule != "karras" {
			t.Errorf("params %s/%s, want euler_a/karras", res.Params.Sampler, res.Params.Schedule)
		}
	})

	t.Run("cfg 1 has no negative pass", func(t *testing.T) {
		r := base
		r.CFG = 1
		a := gen(t, p, r)
		r.Negative = "a completely different negative prompt"
		b := gen(t, p, r)
		if string(nrgba(a.Image)) != string(nrgba(b.Image)) {
			t.Errorf("with CFG 1 the negative prompt changed the image")
		}
		if string(nrgba(a.Image)) == string(nrgba(ref.Image)) {
			t.Errorf("CFG 1 and CFG 7 gave identical pixels")
		}
		r = base // with guidance the negative prompt matters
		r.Negative = "a completely different negative prompt"
		if string(nrgba(gen(t, p, r).Image)) == string(nrgba(ref.Image)) {
			t.Errorf("with CFG 7 the negative prompt did not change the image")
		}
	})

	t.Run("progress", func(t *testing.T) {
		var got []Progress
		r := base
		r.Width, r.Height, r.Steps = 16, 16, 5
		r.Progress = func(pr Progress) { got = append(got, pr) }
		gen(t, p, r)
		if len(got) != 5 {
			t.Fatalf("progress called %d times, want 5: %+v", len(got), got)
		}
		for i, pr := range got {
			if pr.Step != i+1 || pr.Steps != 5 {
				t.Errorf("call %d: step %d/%d, want %d/5", i, pr.Step, pr.Steps, i+1)
			}
			if i > 0 && pr.Elapsed < got[i-1].Elapsed {
				t.Errorf("call %d: elapsed %v went back from %v", i, pr.Elapsed, got[i-1].Elapsed)
			}
		}
	})

	t.Run("cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := base
		r.Steps = 200
		calls := 0
		var at time.Time
		r.Progress = func(pr Progress) {
			calls++
			if pr.Step == 2 {
				cancel()
				at = time.Now()
			}
		}
		res, err := p.Generate(ctx, r)
		if !errors.Is(err, context.Canceled) || res != nil {
			t.Fatalf("Generate after cancel: %v, %v; want context.Canceled", res, err)
		}
		if d := time.Since(at); d > 10*time.Second { // loose: shared CI machines; calls==2 below is the exact check
			t.Errorf("returned %v after the cancel", d)
		}
		if calls != 2 {
			t.Errorf("%d progress calls, want 2 (it stops at the next UNet evaluation)", calls)
		}
		// The pipeline still works afterwards.
		if again := gen(t, p, base); string(nrgba(again.Image)) != string(nrgba(ref.Image)) {
			t.Errorf("after a cancelled run the same request gives other pixels")
		}
		done, cancel2 := context.WithCancel(context.Background())
		cancel2()
		if _, err := p.Generate(done, base); !errors.Is(err, context.Canceled) {
			t.Errorf("already cancelled context: %v", err)
		}
	})

	t.Run("init noise", func(t *testing.T) {
		// The seeded noise given as InitNoise reproduces the seeded run
		// (for a sampler that draws no further noise).
		r := base
		r.Sampler = "euler"
		want := gen(t, p, r)
		src, err := rng.New("cuda", 42)
		if err != nil {
			t.Fatal(err)
		}
		r.InitNoise = src.Randn(4 * 16 * 16)
		r.Seed = 7
		got := gen(t, p, r)
		if string(nrgba(got.Image)) != string(nrgba(want.Image)) {
			t.Errorf("InitNoise equal to the seed's noise gave other pixels")
		}
		for _, n := range []int{4*16*16 - 1, 4*16*16 + 4, 4 * 32 * 32, 1} {
			r.InitNoise = make([]float32, n)
			_, err := p.Generate(context.Background(), r)
			if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), fmt.Sprintf("init noise has %d values", n)) ||
				!strings.Contains(err.Error(), "needs 1024") {
				t.Errorf("InitNoise of %d values: %v", n, err)
			}
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		for _, c := range []struct {
			mod  func(*Request)
			want string
		}{
			{func(r *Request) { r.Width = 36 }, "multiples of 8"},
			{func(r *Request) { r.Height = -8 }, "multiples of 8"},
			{func(r *Request) { r.Width = MaxSide + 8 }, "at most 4096"},
			{func(r *Request) { r.Steps = -1 }, "steps -1"},
			{func(r *Request) { r.Steps = MaxSteps + 1 }, "steps 1001"},
			{func(r *Request) { r.CFG = -2 }, "cfg -2"},
			{func(r *Request) { r.Sampler = "plms" }, `unknown sampler "plms"`},
			{func(r *Request) { r.Schedule = "cosine" }, `unknown schedule "cosine"`},
			{func(r *Request) { r.ClipSkip = 12 }, "clip skip 12"},
			{func(r *Request) { r.RNG = "mt" }, `unknown rng "mt"`},
			{func(r *Request) { r.Prompt = "a \xff fox" }, "not valid UTF-8"},
			{func(r *Request) { r.Negative = "\xc3" }, "not valid UTF-8"},
		} {
			r := base
			c.mod(&r)
			res, err := p.Generate(context.Background(), r)
			if res != nil || !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%+v: %v, want ErrBadRequest with %q", r, err, c.want)
			}
			if err := Validate(r); !errors.Is(err, ErrBadRequest) {
				t.Errorf("Validate %+v: %v", r, err)
			}
		}
		if err := Validate(base); err != nil {
			t.Errorf("Validate(%+v): %v", base, err)
		}
	})
}

// TestTinyNonSquare: non-square sizes, including ones whose latent sides
// (size/2 for the tiny model's VAE) are not multiples of 8.
func TestTinyNonSquare(t *testing.T) {
	p := loadTiny(t, "single", tensor.F16)
	if f := p.vae.Config.Factor(); f != 2 {
		t.Fatalf("tiny VAE factor %d, want 2", f)
	}
	for _, s := range [][2]int{{64, 48}, {48, 64}, {72, 40}, {88, 56}, {8, 8}, {40, 8}} {
		r := Request{Prompt: "a fox", Width: s[0], Height: s[1], Steps: 1, Seed: 1, CFG: 1}
		res := gen(t, p, r)
		if b := res.Image.Bounds(); b.Dx() != s[0] || b.Dy() != s[1] {
			t.Errorf("%dx%d: image %v", s[0], s[1], b)
		}
		if res.Params.Width != s[0] || res.Params.Height != s[1] {
			t.Errorf("%dx%d: params say %dx%d", s[0], s[1], res.Params.Width, res.Params.Height)
		}
	}
	// Transposed sizes are different images, not transposes of one another.
	a := gen(t, p, Request{Prompt: "a fox", Width: 64, Height: 48, Steps: 1, Seed: 1, CFG: 1})
	b := gen(t, p, Request{Prompt: "a fox", Width: 48, Height: 64, Steps: 1, Seed: 1, CFG: 1})
	if distinctPixels(a.Image) < 16 || distinctPixels(b.Image) < 16 {
		t.Errorf("flat images")
	}
}

// TestTinyClose: Generate after Close fails; Close is idempotent.
func TestTinyClose(t *testing.T) {
	p := loadTiny(t, "single", tensor.F16)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	res, err := p.Generate(context.Background(), Request{Prompt: "a fox", Width: 16, Height: 16, Steps: 1})
	if err == nil || res != nil || !strings.Contains(err.Error(), "closed") {
		t.Errorf("Generate after Close: %v, %v", res, err)
	}
}

// TestTinyLayoutsIdentical: the tiny model written as a single .safetensors
// file, a PyTorch zip .ckpt and a diffusers folder gives identical pixels
// for the same request, in each weight dtype; dtypes change the pixels.
func TestTinyLayoutsIdentical(t *testing.T) {
	r := Request{Prompt: "a fox in the snow", Negative: "blurry", Width: 24, Height: 16, Steps: 2, Seed: 9, Sampler: "euler"}
	byDType := map[tensor.DType]string{}
	for _, dt := range []tensor.DType{tensor.F32, tensor.F16, tensor.BF16} {
		var first []byte
		for _, layout := range []string{"single", "ckpt", "diffusers"} {
			p := loadTiny(t, layout, dt)
			res := gen(t, p, r)
			px := nrgba(res.Image)
			if first == nil {
				first = px
				byDType[dt] = string(px)
				if distinctPixels(res.Image) < 16 {
					t.Errorf("%s %s: flat image", layout, dt)
				}
				continue
			}
			if string(px) != string(first) {
				t.Errorf("%s %s: pixels differ from the single-file model's", layout, dt)
			}
			p.Close()
		}
	}
	// (Under GOSD_PRECISION=bf16 every weight is rounded to bf16 anyway.)
	if os.Getenv("GOSD_PRECISION") == "" && (byDType[tensor.F32] == byDType[tensor.F16] || byDType[tensor.F16] == byDType[tensor.BF16]) {
		t.Errorf("weights rounded to f16/bf16 gave the same pixels as f32: are dtypes honoured?")
	}
}

// TestLoadErrors: Load names the problem for a missing file, a missing
// tokenizer and an unknown backend.
func TestLoadErrors(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if _, err := Load(ctx, filepath.Join(dir, "absent.safetensors"), Options{}); err == nil || !strings.Contains(err.Error(), "absent.safetensors") {
		t.Errorf("missing file: %v", err)
	}
	path := testckpt.Tiny(t, "single", tensor.F16)
	t.Setenv("GOSD_TOKENIZER", "")
	_, err := Load(ctx, path, Options{})
	if err == nil || !strings.Contains(err.Error(), "no CLIP tokenizer found") || !strings.Contains(err.Error(), "--tokenizer") {
		t.Errorf("no tokenizer: %v", err)
	}
	if _, err := Load(ctx, path, Options{Tokenizer: dir}); err == nil || !strings.Contains(err.Error(), "vocab.json") {
		t.Errorf("empty tokenizer folder: %v", err)
	}
	if _, err := Load(ctx, path, Options{Tokenizer: tinyTokenizer(t), Backend: "abacus"}); err == nil || !strings.Contains(err.Error(), `unknown backend "abacus"`) {
		t.Errorf("unknown backend: %v", err)
	}
	// $GOSD_TOKENIZER is the fallback.
	t.Setenv("GOSD_TOKENIZER", tinyTokenizer(t))
	p, err := Load(ctx, path, Options{})
	if err != nil {
		t.Fatalf("tokenizer from $GOSD_TOKENIZER: %v", err)
	}
	p.Close()
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := Load(cctx, path, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Load: %v", err)
	}
}

// TestSamplersListed: the request's lists are sd/sample's, so every name
// Validate accepts is one the sampler runs.
func TestSamplersListed(t *testing.T) {
	if fmt.Sprint(Samplers) != fmt.Sprint(sample.Samplers) || fmt.Sprint(Schedules) != fmt.Sprint(sample.Schedules) {
		t.Errorf("Samplers %v / Schedules %v differ from sd/sample's", Samplers, Schedules)
	}
	for _, s := range Samplers {
		if samplerLabels[s] == "" {
			t.Errorf("sampler %q has no AUTOMATIC1111 label", s)
		}
	}
	// Every schedule other than the default must be written into the
	// infotext, or the image cannot be reproduced from its metadata.
	for _, s := range Schedules {
		text := Params{Sampler: "euler", Schedule: s}.Infotext()
		label, ok := scheduleLabels[s]
		switch {
		case !ok:
			t.Errorf("schedule %q has no AUTOMATIC1111 label", s)
		case label != "Automatic" && !strings.Contains(text, "Schedule type: "+label):
			t.Errorf("schedule %q: infotext %q lacks its Schedule type", s, text)
		}
	}
}

// TestPackedWeightsReleasedBetweenPhases: in bf16, each network's packed
// weights are dropped when its phase ends (nothing stays cached after a
// generation), unless KeepPackedWeights; both give the same pixels, and a
// second generation (packing again) gives them too. The kernel profile
// records the UNet's convolutions.
func TestPackedWeightsReleasedBetweenPhases(t *testing.T) {
	if !tensor.CPUHasBF16() || !tensor.CPUHasAVX512() || os.Getenv("GOSD_CPU") == "portable" {
		t.Skip("no AVX512-BF16 kernels on this CPU")
	}
	defer tensor.NewCPU().SetPrecision("auto")
	defer tensor.ClearCPUWeightCache()
	path := testckpt.Tiny(t, "single", tensor.F16)
	r := Request{Prompt: "a fox in the snow", Negative: "blurry", Width: 24, Height: 16, Steps: 2, Seed: 9, Sampler: "euler"}
	var want []byte
	for _, keep := range []bool{false, true} {
		tensor.ClearCPUWeightCache()
		p, err := Load(context.Background(), path, Options{Tokenizer: tinyTokenizer(t), Precision: "bf16",
			KeepPackedWeights: keep, Profile: true})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 2; i++ {
			px := nrgba(gen(t, p, r).Image)
			if want == nil {
				want = px
			} else if string(px) != string(want) {
				t.Errorf("keep=%v, generation %d: pixels differ from the first generation's", keep, i+1)
			}
			cached := tensor.SetCPUWeightCache(-1)
			if !keep && cached != 0 {
				t.Errorf("%d bytes of packed weights left after a generation, want 0", cached)
			}
			if keep && cached == 0 {
				t.Error("KeepPackedWeights: the packed weights were dropped")
			}
		}
		found := false
		for _, s := range p.Profile().Stats() {
			found = found || (s.Kind == "conv2d 3x3" && s.Calls > 0 && s.Flops > 0)
		}
		if !found {
			t.Errorf("profile has no 3x3 convolutions: %+v", p.Profile().Stats())
		}
		p.Close()
	}
}
