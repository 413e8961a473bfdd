package tensor_test

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/gosd/gosd/sd"
	"github.com/gosd/gosd/sd/imageio"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// TestCPUBF16PipelinePSNR generates the same image (tiny random SD 1.5
// model, same seed, CFG on) with the f32 and the bf16 products and asserts
// that the two images agree within 30 dB PSNR or better.
func TestCPUBF16PipelinePSNR(t *testing.T) {
	if !tensor.CPUHasBF16() || !tensor.CPUHasAVX512() {
		t.Skip("no AVX512-BF16 on this CPU")
	}
	if tensor.NewCPU().Name() == "cpu/portable" {
		t.Skip("portable kernels selected (GOSD_CPU=portable): the bf16 products need the AVX-512 kernels")
	}
	tok := filepath.Join(testckpt.SharedDir(t), "models", "sd15", "tokenizer")
	path := testckpt.Tiny(t, "single", tensor.F16)
	p, err := sd.Load(context.Background(), path, sd.Options{Tokenizer: tok})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	be := tensor.NewCPU()
	defer func() {
		if err := be.SetPrecision("f32"); err != nil {
			t.Fatal(err)
		}
	}()
	req := sd.Request{Prompt: "a watercolor painting of a fox", Negative: "blurry", Width: 64, Height: 64,
		Steps: 6, CFG: 7, Sampler: "euler", Seed: 42}
	gen := func(prec string) *sd.Result {
		if err := be.SetPrecision(prec); err != nil {
			t.Fatal(err)
		}
		res, err := p.Generate(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	f32 := gen("f32")
	bf16 := gen("bf16")
	if p.BackendName() != "cpu/avx512-bf16" {
		t.Fatalf("backend %q with bf16 selected", p.BackendName())
	}
	psnr, err := imageio.PSNR(f32.Image, bf16.Image)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bf16 vs f32 image PSNR %.1f dB", psnr)
	if math.IsInf(psnr, 1) {
		t.Fatal("bf16 image identical to the f32 one: the bf16 kernels did not run")
	}
	if psnr < 30 {
		t.Fatalf("bf16 image PSNR %.1f dB against f32, want >= 30", psnr)
	}
	if f32again := gen("f32"); must(imageio.PSNR(f32.Image, f32again.Image)) < 99 {
		t.Fatal("f32 image not reproduced after switching back from bf16")
	}
}

func must(v float64, err error) float64 {
	if err != nil {
		panic(err)
	}
	return v
}
