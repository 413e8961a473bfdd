package sd

import (
	"errors"
	"fmt"
	"image"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gosd/gosd/sd/sample"
)

// Version is gosd's release, written into image metadata.
const Version = "0.1.0"

// Samplers lists the sampler names Generate accepts.
var Samplers = sample.Samplers

// Schedules lists the sigma schedules Generate accepts.
var Schedules = sample.Schedules

// Limits on a request; sizes beyond them are refused before any work.
const (
	MaxSide  = 4096 // pixels, each side
	MaxSteps = 1000
	MaxBatch = 1
)

// Request describes one text-to-image generation. Zero values take the
// defaults of DefaultRequest, except Seed: 0 is a seed like any other (use a
// negative Seed, as DefaultRequest does, for one picked from the clock).
type Request struct {
	Prompt   string
	Negative string
	Width    int     // pixels, a multiple of 8
	Height   int     // pixels, a multiple of 8
	Steps    int     // sampling steps
	CFG      float64 // classifier-free guidance scale; 1 disables the negative pass
	Sampler  string  // one of Samplers
	Schedule string  // one of Schedules
	Seed     int64   // noise seed; negative picks one from the clock
	ClipSkip int     // 1 = last CLIP layer, 2 = penultimate (AUTOMATIC1111's "Clip skip")
	RNG      string  // "cuda" (AUTOMATIC1111's default noise) or "cpu" (ComfyUI's)

	// InitNoise, when set, replaces the seeded starting noise: [4, H/8, W/8]
	// (H/f, W/f for a VAE with downscale factor f)
	// values of unit variance, before scaling by the first sigma.
	InitNoise []float32

	// Progress, when set, is called after each sampling step.
	Progress func(Progress)
}

// Progress reports sampling progress.
type Progress struct {
	Step, Steps int
	Elapsed     time.Duration
}

// Result is a generated image with the parameters that made it.
type Result struct {
	Image   image.Image
	Params  Params
	Timings Timings
}

// Timings break a generation down by stage.
type Timings struct {
	TextEncode time.Duration
	Sampling   time.Duration
	VAEDecode  time.Duration
	PerStep    time.Duration
}

// DefaultRequest returns the defaults: 512x512, 20 steps of euler_a, CFG 7,
// normal schedule, clip skip 1, CUDA-compatible noise.
func DefaultRequest() Request {
	return Request{Width: 512, Height: 512, Steps: 20, CFG: 7, Sampler: "euler_a",
		Schedule: "normal", ClipSkip: 1, RNG: "cuda", Seed: -1}
}

// ErrBadRequest classifies invalid requests; test with errors.Is.
var ErrBadRequest = errors.New("invalid request")

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadRequest, fmt.Sprintf(format, args...))
}

// normalize fills defaults and validates r.
func (r *Request) normalize() error {
	d := DefaultRequest()
	if r.Width == 0 {
		r.Width = d.Width
	}
	if r.Height == 0 {
		r.Height = d.Height
	}
	if r.Steps == 0 {
		r.Steps = d.Steps
	}
	if r.CFG == 0 {
		r.CFG = d.CFG
	}
	if r.Sampler == "" {
		r.Sampler = d.Sampler
	}
	if r.Schedule == "" {
		r.Schedule = d.Schedule
	}
	if r.ClipSkip == 0 {
		r.ClipSkip = d.ClipSkip
	}
	if r.RNG == "" {
		r.RNG = d.RNG
	}
	if r.Seed < 0 {
		r.Seed = time.Now().UnixNano() & (1<<32 - 1)
	}
	r.Sampler = strings.ToLower(r.Sampler)
	r.Schedule = strings.ToLower(r.Schedule)
	switch {
	case !utf8.ValidString(r.Prompt) || !utf8.ValidString(r.Negative):
		return badRequest("the prompt is not valid UTF-8 text")
	case r.Width < 8 || r.Height < 8 || r.Width%8 != 0 || r.Height%8 != 0:
		return badRequest("size %dx%d: width and height must be positive multiples of 8", r.Width, r.Height)
	case r.Width > MaxSide || r.Height > MaxSide:
		return badRequest("size %dx%d: each side must be at most %d pixels", r.Width, r.Height, MaxSide)
	case r.Steps < 1 || r.Steps > MaxSteps:
		return badRequest("steps %d: must be between 1 and %d", r.Steps, MaxSteps)
	case r.CFG < 0 || r.CFG > 100:
		return badRequest("cfg %g: must be between 0 and 100", r.CFG)
	case !slices.Contains(Samplers, r.Sampler):
		return badRequest("unknown sampler %q (valid: %s)", r.Sampler, strings.Join(Samplers, ", "))
	case !slices.Contains(Schedules, r.Schedule):
		return badRequest("unknown schedule %q (valid: %s)", r.Schedule, strings.Join(Schedules, ", "))
	case r.ClipSkip < 1 || r.ClipSkip > 11:
		return badRequest("clip skip %d: must be between 1 and 11", r.ClipSkip)
	case r.RNG != "cuda" && r.RNG != "cpu":
		return badRequest("unknown rng %q (valid: cuda, cpu)", r.RNG)
	}
	return nil
}

// Validate reports whether r (with defaults filled in) is a valid request,
// without loading a model: the checks of Generate, including that the image
// can be decoded in the memory available now.
func Validate(r Request) error {
	if err := r.normalize(); err != nil {
		return err
	}
	return checkMemory(r.Width, r.Height)
}
