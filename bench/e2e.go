package bench

import (
	"context"
	"image"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gosd/gosd/sd"
	"github.com/gosd/gosd/sd/imageio"
	"github.com/gosd/gosd/sd/tensor"
)

// StepResult is one end-to-end measurement at one size.
type StepResult struct {
	Width        int     `json:"width"`
	Height       int     `json:"height"`
	Steps        int     `json:"steps"`
	SPerStep     float64 `json:"s_per_step"`     // seconds per sampling step (CFG on: 2 UNet passes)
	TextEncodeS  float64 `json:"text_encode_s"`  // prompt and negative prompt
	VAEDecodeS   float64 `json:"vae_decode_s"`   // one image
	PeakRSSBytes uint64  `json:"peak_rss_bytes"` // process peak resident memory during this run
	// CPU time (user+system of the whole process) per sampling step and for
	// the VAE decode, divided by the kernel threads: what the wall time
	// would be with the cores to ourselves and never idle. On a shared
	// machine it is the steadier figure; CPUShare = CPU time / (wall x
	// threads) of the steps says how busy the cores were (1: always busy).
	CPUSPerStep  float64 `json:"cpu_s_per_step"`
	CPUVAEDecode float64 `json:"cpu_vae_decode_s"`
	CPUShare     float64 `json:"cpu_share"`
	// StepS is the wall time of each step; the first also packs the UNet's
	// weights for the CPU kernels. SteadySPerStep is the mean of the others.
	StepS          []float64 `json:"step_s"`
	SteadySPerStep float64   `json:"steady_s_per_step,omitempty"`
	// Ops is the kernel profile of the steps after the first (when the
	// pipeline was loaded with Options.Profile), longest first, and
	// KernelShare the share of those steps' wall time spent inside kernel
	// calls; the rest is Go code between them (sampler, CFG, allocation),
	// during which one thread works and the other cores idle.
	Ops         []OpRow `json:"ops,omitempty"`
	VAEOps      []OpRow `json:"vae_ops,omitempty"` // the VAE decode's kernel profile
	KernelShare float64 `json:"kernel_share,omitempty"`
	// IdleCoreShare is the share of the steady steps' core time (wall x
	// threads) in which a core sat idle: inside kernels, the time threads
	// waited at the end of a parallel region for the others (measured by
	// the CPU kernels' work counters); outside them, every core but the one
	// running the Go code. With 2 cores it is the share of the time one
	// core was idle. Needs the profile and the CPU backend.
	IdleCoreShare float64 `json:"idle_core_share,omitempty"`
}

// OpRow is one kind of kernel call in a profile.
type OpRow struct {
	Kind   string  `json:"kind"`
	Calls  int     `json:"calls"`
	S      float64 `json:"s"`
	GFLOPS float64 `json:"gflops,omitempty"`
}

// Generate runs one text-to-image generation of steps steps at w x h with
// CFG 7 and euler (deterministic), and measures it. The process's peak-RSS
// counter is reset first where the kernel allows it.
func Generate(ctx context.Context, p *sd.Pipeline, w, h, steps int, threads int) (StepResult, error) {
	resetPeakRSS()
	var marks []float64 // process CPU seconds at each step's end
	var walls []time.Duration
	prof := p.Profile()
	var ops []tensor.OpStat
	var opsTotal, work0, work1 time.Duration
	res, err := p.Generate(ctx, sd.Request{Prompt: "a watercolor painting of a fox in a snowy forest",
		Negative: "low quality", Width: w, Height: h, Steps: steps, CFG: 7, Sampler: "euler", Seed: 1,
		Progress: func(pr sd.Progress) {
			marks = append(marks, CPUSeconds())
			walls = append(walls, pr.Elapsed)
			if prof != nil && pr.Step == 1 {
				prof.Reset()
				work0 = tensor.CPUWorkTime()
			}
			if prof != nil && pr.Step == pr.Steps && pr.Steps > 1 {
				ops, opsTotal = prof.Stats(), prof.Total()
				work1 = tensor.CPUWorkTime()
				prof.Reset() // from here: the VAE decode
			}
		}})
	if err != nil {
		return StepResult{}, err
	}

	end := CPUSeconds()
	r := StepResult{Width: w, Height: h, Steps: steps, SPerStep: res.Timings.PerStep.Seconds(),
		TextEncodeS: res.Timings.TextEncode.Seconds(), VAEDecodeS: res.Timings.VAEDecode.Seconds(),
		PeakRSSBytes: PeakRSS()}
	for i, t := range walls {
		prev := time.Duration(0)
		if i > 0 {
			prev = walls[i-1]
		}
		r.StepS = append(r.StepS, (t - prev).Seconds())
	}
	if n := len(walls); n >= 2 {
		steady := walls[n-1] - walls[0]
		r.SteadySPerStep = steady.Seconds() / float64(n-1)
		if len(ops) > 0 && steady > 0 {
			r.KernelShare = opsTotal.Seconds() / steady.Seconds()
			if _, ok := p.Backend().(*tensor.CPU); ok && threads > 0 {
				busy := (work1 - work0).Seconds() + (steady - opsTotal).Seconds()
				r.IdleCoreShare = max(0, 1-busy/(float64(threads)*steady.Seconds()))
			}
			for _, o := range ops {
				r.Ops = append(r.Ops, OpRow{Kind: o.Kind, Calls: o.Calls, S: o.Time.Seconds(), GFLOPS: o.GFLOPS()})
			}
		}
	}
	if prof != nil && len(ops) > 0 {
		for _, o := range prof.Stats() {
			r.VAEOps = append(r.VAEOps, OpRow{Kind: o.Kind, Calls: o.Calls, S: o.Time.Seconds(), GFLOPS: o.GFLOPS()})
		}
	}
	th := float64(max(threads, 1))
	if n := len(marks); n >= 2 {
		// Steps after the first (which also packs weights into the cache).
		cpu := marks[n-1] - marks[0]
		r.CPUSPerStep = cpu / float64(n-1) / th
		if wall := (walls[n-1] - walls[0]).Seconds(); wall > 0 {
			r.CPUShare = cpu / wall / th
		}
	}
	if n := len(marks); n >= 1 {
		r.CPUVAEDecode = (end - marks[n-1]) / th
	}
	return r, nil
}

// CPUSeconds returns the user+system CPU time of the process so far.
func CPUSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// Accuracy generates the benchmark image at w x h twice, with the matrix
// products in f32 and in bf16 (setPrecision switches them), and returns the
// PSNR in dB of the bf16 image against the f32 one.
func Accuracy(ctx context.Context, p *sd.Pipeline, w, h, steps int, setPrecision func(string) error) (float64, error) {
	var imgs []image.Image
	for _, prec := range []string{"f32", "bf16"} {
		if err := setPrecision(prec); err != nil {
			return 0, err
		}
		res, err := p.Generate(ctx, sd.Request{Prompt: "a watercolor painting of a fox in a snowy forest",
			Negative: "low quality", Width: w, Height: h, Steps: steps, CFG: 7, Sampler: "euler", Seed: 1})
		if err != nil {
			return 0, err
		}
		imgs = append(imgs, res.Image)
	}
	return imageio.PSNR(imgs[0], imgs[1])
}

// PeakRSS returns the process's peak resident set size (VmHWM), or 0.
func PeakRSS() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// resetPeakRSS resets VmHWM to the current RSS (Linux: clear_refs value 5).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }
