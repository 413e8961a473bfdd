package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"runtime"
	"strconv"
	"time"

	"github.com/gosd/gosd/bench"
	"github.com/gosd/gosd/sd"
	"github.com/gosd/gosd/sd/tensor"
)

// benchReport is what `gosd bench --json` prints. The top-level speed fields
// repeat the run at the main size (512 unless --size says otherwise).
type benchReport struct {
	Model        string               `json:"model"`
	Backend      string               `json:"backend"`
	CPU          bench.CPUInfo        `json:"cpu"`
	PeakF32      float64              `json:"peak_f32_gflops"`
	PeakBF16     float64              `json:"peak_bf16_gflops"`
	Kernels      []bench.KernelResult `json:"kernels,omitempty"`
	Runs         []bench.StepResult   `json:"runs"`
	SPerStep     float64              `json:"s_per_step"`
	TextEncodeS  float64              `json:"text_encode_s"`
	VAEDecodeS   float64              `json:"vae_decode_s"`
	PeakRSSBytes uint64               `json:"peak_rss_bytes"`
	LoadS        float64              `json:"load_s"`
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", stderr)
	model := fs.String("model", "", "checkpoint (a full-size SD 1.5 file: gosd testmodel --size full)")
	size := fs.Int("size", 0, "one square size to run (default: 256, 512 and 768)")
	steps := fs.Int("steps", 2, "sampling steps per size (s/step is their mean)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	chart := fs.String("chart", "", "write a PNG chart of kernel GFLOP/s per shape to this path")
	kernels := fs.Bool("kernels", true, "measure the kernels on SD 1.5 shapes")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	tokenizer := fs.String("tokenizer", "", "CLIP tokenizer folder (see gosd generate)")
	backend := fs.String("backend", "cpu", "compute backend")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if *model == "" && !*kernels {
		return usagef("--model is required unless only kernels are measured")
	}
	sizes := []int{256, 512, 768}
	if *size != 0 {
		if *size%8 != 0 || *size < 64 {
			return usagef("--size %d: want a multiple of 8, at least 64", *size)
		}
		sizes = []int{*size}
	}
	be, err := sd.NewBackend(*backend, *threads)
	if err != nil {
		return err
	}
	cores := runtime.NumCPU()
	if *threads > 0 {
		cores = min(*threads, cores)
	}
	info, err := bench.ReadCPUInfo(cores)
	if err != nil {
		return err
	}
	rep := benchReport{Model: *model, Backend: be.Name(), CPU: info, PeakF32: info.PeakF32(), PeakBF16: info.PeakBF16()}
	if *kernels {
		rep.Kernels, err = bench.RunKernels(be, bench.SD15Kernels(tensor.F16), tensor.F16, info.PeakF32(), time.Second)
		if err != nil {
			return err
		}
		if *chart != "" {
			if err := bench.Chart(*chart, rep.Kernels, info); err != nil {
				return err
			}
		}
	}
	if *model != "" {
		t0 := time.Now()
		p, err := sd.Load(ctx, *model, sd.Options{Backend: *backend, Threads: *threads, Tokenizer: *tokenizer})
		if err != nil {
			return err
		}
		defer p.Close()
		rep.LoadS = time.Since(t0).Seconds()
		for _, s := range sizes {
			r, err := bench.Generate(ctx, p, s, s, *steps)
			if err != nil {
				return err
			}
			rep.Runs = append(rep.Runs, r)
			if !*asJSON {
				fmt.Fprintf(stderr, "%dx%d: %.2f s/step\n", s, s, r.SPerStep)
			}
		}
		main := rep.Runs[0]
		for _, r := range rep.Runs {
			if r.Width == 512 {
				main = r
			}
		}
		rep.SPerStep, rep.TextEncodeS, rep.VAEDecodeS, rep.PeakRSSBytes = main.SPerStep, main.TextEncodeS, main.VAEDecodeS, main.PeakRSSBytes
	}
	if *asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", " ")
		return e.Encode(rep)
	}
	printBench(stdout, rep)
	return nil
}

func printBench(w io.Writer, rep benchReport) {
	fmt.Fprintf(w, "cpu      %s, %d cores at %.0f MHz; backend %s\n", rep.CPU.Model, rep.CPU.Cores, rep.CPU.MHz, rep.Backend)
	fmt.Fprintf(w, "peaks    f32 %.0f GFLOP/s, bf16 %.0f GFLOP/s (%s)\n", rep.PeakF32, rep.PeakBF16, rep.CPU.PeakNote)
	if len(rep.Kernels) > 0 {
		fmt.Fprintf(w, "\n%-10s %-22s %10s %10s %8s\n", "kernel", "shape", "ms", "GFLOP/s", "% f32")
		for _, k := range rep.Kernels {
			fmt.Fprintf(w, "%-10s %-22s %10.2f %10.1f %7.1f%%\n", k.Op, k.Shape, k.Seconds*1e3, k.GFLOPS, 100*k.PeakShare)
		}
	}
	if len(rep.Runs) > 0 {
		fmt.Fprintf(w, "\nmodel %s (load %.1f s)\n", rep.Model, rep.LoadS)
		fmt.Fprintf(w, "%-9s %6s %10s %10s %10s %10s\n", "size", "steps", "s/step", "text s", "VAE s", "peak RSS")
		for _, r := range rep.Runs {
			fmt.Fprintf(w, "%-9s %6d %10.2f %10.2f %10.2f %9.2fG\n", strconv.Itoa(r.Width)+"x"+strconv.Itoa(r.Height),
				r.Steps, r.SPerStep, r.TextEncodeS, r.VAEDecodeS, float64(r.PeakRSSBytes)/1e9)
		}
	}
}
