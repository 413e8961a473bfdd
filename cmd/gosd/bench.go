package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/gosd/gosd/bench"
	"github.com/gosd/gosd/sd"
	"github.com/gosd/gosd/sd/tensor"
)

// benchReport is what `gosd bench --json` prints. The top-level speed fields
// repeat the run at the main size (512 unless --size says otherwise).
type benchReport struct {
	Model     string               `json:"model"`
	Backend   string               `json:"backend"`
	CPU       bench.CPUInfo        `json:"cpu"`
	PeakF32   float64              `json:"peak_f32_gflops"`
	PeakBF16  float64              `json:"peak_bf16_gflops"`
	Precision string               `json:"precision"` // of the end-to-end runs
	Kernels   []bench.KernelResult `json:"kernels,omitempty"`
	// AccuracyPSNR is the PSNR (dB) of the bf16 image against the f32 one at
	// the main size (--accuracy), 0 when not measured.
	AccuracyPSNR float64            `json:"bf16_vs_f32_psnr_db,omitempty"`
	Runs         []bench.StepResult `json:"runs"`
	SPerStep     float64            `json:"s_per_step"`
	TextEncodeS  float64            `json:"text_encode_s"`
	VAEDecodeS   float64            `json:"vae_decode_s"`
	PeakRSSBytes uint64             `json:"peak_rss_bytes"`
	LoadS        float64            `json:"load_s"`
}

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("bench", stderr)
	model := fs.String("model", "", "checkpoint (a full-size SD 1.5 file: gosd testmodel --size full)")
	size := fs.Int("size", 0, "one square size to run (default: 256, 512 and 768)")
	steps := fs.Int("steps", 2, "sampling steps per size (s/step is their mean)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	jsonOut := fs.String("json-out", "", "also write the JSON object to this file")
	chart := fs.String("chart", "", "write a PNG chart of kernel GFLOP/s per shape to this path")
	kernels := fs.Bool("kernels", true, "measure the kernels on SD 1.5 shapes")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	tokenizer := fs.String("tokenizer", "", "CLIP tokenizer folder (see gosd generate)")
	backend := fs.String("backend", "cpu", "compute backend")
	precision := fs.String("precision", "f32", "precision of the CPU matrix products for the model runs: f32 or bf16 (kernels are measured in both)")
	accuracy := fs.Bool("accuracy", false, "also generate at the main size in f32 and bf16 and report their PSNR")
	profile := fs.Bool("profile", false, "print where a step's time goes: the kernel profile of the steps after the first")
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
	if *precision != "f32" && *precision != "bf16" {
		return usagef("--precision %q: want f32 or bf16", *precision)
	}
	be, err := sd.NewBackend(*backend, *threads)
	if err != nil {
		return err
	}
	cpuBE, isCPU := be.(*tensor.CPU)
	if !isCPU && (*precision != "f32" || *accuracy) {
		return usagef("--precision and --accuracy apply to the cpu backend")
	}
	cores := runtime.NumCPU()
	if *threads > 0 {
		cores = min(*threads, cores)
	}
	info, err := bench.ReadCPUInfo(cores)
	if err != nil {
		return err
	}
	if isCPU {
		if err := info.MeasureClock(0.4); err != nil {
			return err
		}
	}
	rep := benchReport{Model: *model, CPU: info, PeakF32: info.PeakF32(), PeakBF16: info.PeakBF16(), Precision: *precision}
	setPrec := func(p string) error {
		if isCPU {
			return cpuBE.SetPrecision(p)
		}
		return nil
	}
	if *kernels {
		precs := []string{"f32"}
		if isCPU && tensor.CPUHasBF16() {
			precs = append(precs, "bf16")
		}
		for _, p := range precs {
			if err := setPrec(p); err != nil {
				return err
			}
			peak := info.PeakF32()
			if p == "bf16" {
				peak = info.PeakBF16()
			}
			ks, err := bench.RunKernels(be, bench.SD15Kernels(tensor.F16), tensor.F16, peak, time.Second)
			if err != nil {
				return err
			}
			rep.Kernels = append(rep.Kernels, ks...)
			if bench.OneDNN != nil && isCPU {
				shapes := append(append([][3]int(nil), bench.MatMulShapes...), bench.SD15LinearShapes...)
				ks, err := bench.OneDNN(shapes, p, peak, time.Second)
				if err != nil {
					return err
				}
				rep.Kernels = append(rep.Kernels, ks...)
			}
		}
		if *chart != "" {
			if err := bench.Chart(*chart, rep.Kernels, info); err != nil {
				return err
			}
		}
	}
	if err := setPrec(*precision); err != nil {
		return err
	}
	rep.Backend = be.Name()
	// The kernel cases' weights and inputs must not count in the model runs'
	// peak memory.
	tensor.ClearCPUWeightCache()
	debug.FreeOSMemory()
	if *model != "" {
		t0 := time.Now()
		p, err := sd.Load(ctx, *model, sd.Options{Backend: *backend, Threads: *threads, Tokenizer: *tokenizer,
			Profile: true})
		if err != nil {
			return err
		}
		defer p.Close()
		rep.LoadS = time.Since(t0).Seconds()
		for _, s := range sizes {
			r, err := bench.Generate(ctx, p, s, s, *steps, cores)
			if err != nil {
				return err
			}
			rep.Runs = append(rep.Runs, r)
			if !*asJSON {
				fmt.Fprintf(stderr, "%dx%d: %.2f s/step, %.2f after the first (CPU %.2f s/step per thread, cores busy %.0f%%)\n",
					s, s, r.SPerStep, r.SteadySPerStep, r.CPUSPerStep, 100*r.CPUShare)
			}
		}
		main := rep.Runs[0]
		for _, r := range rep.Runs {
			if r.Width == 512 {
				main = r
			}
		}
		rep.SPerStep, rep.TextEncodeS, rep.VAEDecodeS, rep.PeakRSSBytes = main.SPerStep, main.TextEncodeS, main.VAEDecodeS, main.PeakRSSBytes
		if *accuracy {
			rep.AccuracyPSNR, err = bench.Accuracy(ctx, p, main.Width, main.Height, *steps, setPrec)
			if err != nil {
				return err
			}
			if err := setPrec(*precision); err != nil {
				return err
			}
		}
	}
	if *jsonOut != "" {
		var b bytes.Buffer
		e := json.NewEncoder(&b)
		e.SetIndent("", " ")
		e.SetEscapeHTML(false) // shapes read "320->320@64x64"
		if err := e.Encode(rep); err != nil {
			return err
		}
		if err := os.WriteFile(*jsonOut, b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	if *asJSON {
		e := json.NewEncoder(stdout)
		e.SetIndent("", " ")
		e.SetEscapeHTML(false)
		return e.Encode(rep)
	}
	printBench(stdout, rep, *profile)
	return nil
}

func printBench(w io.Writer, rep benchReport, showOps bool) {
	fmt.Fprintf(w, "cpu      %s, %d cores at %.0f MHz (nominal %.0f); backend %s\n", rep.CPU.Model, rep.CPU.Cores, rep.CPU.ClockMHz(), rep.CPU.MHz, rep.Backend)
	fmt.Fprintf(w, "peaks    f32 %.0f GFLOP/s, bf16 %.0f GFLOP/s (%s)\n", rep.PeakF32, rep.PeakBF16, rep.CPU.PeakNote)
	printKernels(w, rep.Kernels)
	if rep.AccuracyPSNR != 0 {
		fmt.Fprintf(w, "\nbf16 vs f32 image PSNR %.1f dB\n", rep.AccuracyPSNR)
	}
	if len(rep.Runs) > 0 {
		fmt.Fprintf(w, "\nmodel %s (load %.1f s)\n", rep.Model, rep.LoadS)
		fmt.Fprintf(w, "%-9s %6s %10s %10s %10s %10s %10s %10s %10s %6s\n", "size", "steps", "s/step", "steady", "text s", "VAE s", "peak RSS",
			"cpu s/step", "cpu VAE s", "busy")
		for _, r := range rep.Runs {
			fmt.Fprintf(w, "%-9s %6d %10.2f %10.2f %10.2f %10.2f %9.2fG %10.2f %10.2f %5.0f%%\n", strconv.Itoa(r.Width)+"x"+strconv.Itoa(r.Height),
				r.Steps, r.SPerStep, r.SteadySPerStep, r.TextEncodeS, r.VAEDecodeS, float64(r.PeakRSSBytes)/1e9, r.CPUSPerStep, r.CPUVAEDecode, 100*r.CPUShare)
		}
		fmt.Fprintln(w, "(s/step: mean of all steps, the first also packs the UNet's weights; steady: the steps after the first;")
		fmt.Fprintln(w, " cpu columns: process CPU seconds / threads, the time with the cores to ourselves; busy: CPU / (wall x threads))")
		for _, r := range rep.Runs {
			if r.IdleCoreShare > 0 {
				fmt.Fprintf(w, "%dx%d: idle core time %.1f%% of the steady steps (inside kernels: waits at region ends; outside: all cores but the Go code's)\n",
					r.Width, r.Height, 100*r.IdleCoreShare)
			}
		}
		for _, r := range rep.Runs {
			if showOps {
				printOps(w, r)
			}
		}
	}
}

// printOps prints the kernel profile of one run's steady steps.
func printOps(w io.Writer, r bench.StepResult) {
	if len(r.Ops) == 0 {
		return
	}
	steps := float64(len(r.StepS) - 1)
	fmt.Fprintf(w, "\n%dx%d: where a step goes (%.2f s/step; %.1f%% inside kernels, the rest is Go code between them)\n",
		r.Width, r.Height, r.SteadySPerStep, 100*r.KernelShare)
	fmt.Fprintf(w, "%-22s %8s %10s %7s %9s\n", "kernel", "calls", "s/step", "share", "GFLOP/s")
	for _, o := range r.Ops {
		g := ""
		if o.GFLOPS > 0 {
			g = fmt.Sprintf("%9.0f", o.GFLOPS)
		}
		fmt.Fprintf(w, "%-22s %8.0f %10.3f %6.1f%% %9s\n", o.Kind, float64(o.Calls)/steps, o.S/steps,
			100*o.S/steps/r.SteadySPerStep, g)
	}
	if len(r.VAEOps) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%dx%d: where the VAE decode goes (%.2f s)\n", r.Width, r.Height, r.VAEDecodeS)
	fmt.Fprintf(w, "%-22s %8s %10s %7s %9s\n", "kernel", "calls", "s", "share", "GFLOP/s")
	for _, o := range r.VAEOps {
		g := ""
		if o.GFLOPS > 0 {
			g = fmt.Sprintf("%9.0f", o.GFLOPS)
		}
		fmt.Fprintf(w, "%-22s %8d %10.3f %6.1f%% %9s\n", o.Kind, o.Calls, o.S, 100*o.S/r.VAEDecodeS, g)
	}
}

// printKernels prints one row per kernel case with the f32 and bf16
// precisions side by side (GFLOP/s and share of that precision's peak), for
// gosd and, where measured, oneDNN.
func printKernels(w io.Writer, ks []bench.KernelResult) {
	if len(ks) == 0 {
		return
	}
	type key struct{ impl, op, shape string }
	var order []key
	got := map[key]map[string]bench.KernelResult{}
	for _, k := range ks {
		kk := key{k.Impl, k.Op, k.Shape}
		if got[kk] == nil {
			got[kk] = map[string]bench.KernelResult{}
			order = append(order, kk)
		}
		got[kk][k.Precision] = k
	}
	fmt.Fprintf(w, "\n%-7s %-10s %-20s %9s %9s %7s %9s %9s %9s %7s %9s\n", "impl", "kernel", "shape",
		"f32 ms", "GFLOP/s", "% peak", "GF/s-cpu", "bf16 ms", "GFLOP/s", "% peak", "GF/s-cpu")
	for _, kk := range order {
		fmt.Fprintf(w, "%-7s %-10s %-20s", kk.impl, kk.op, kk.shape)
		for _, p := range []string{"f32", "bf16"} {
			if r, ok := got[kk][p]; ok {
				fmt.Fprintf(w, " %9.2f %9.1f %6.1f%% %9.1f", r.Seconds*1e3, r.GFLOPS, 100*r.PeakShare, r.GFLOPSCPU)
			} else {
				fmt.Fprintf(w, " %9s %9s %7s %9s", "-", "-", "-", "-")
			}
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "(% peak: wall-clock GFLOP/s over that precision's peak; GF/s-cpu: flops per CPU-second x threads;")
	fmt.Fprintln(w, " conv3x3 counts the direct convolution's 2·O·C·9·H·W flops: in bf16, rows of 16 or more 2x2 tiles")
	fmt.Fprintln(w, " run Winograd F(2x2,3x3), which needs 2.25x fewer multiplications, so its rate can pass the peak)")
}
