//go:build cuda

package sd

import (
	"context"
	"testing"

	"github.com/gosd/gosd/sd/imageio"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// TestCUDAGenerateTiny generates with the tiny SD 1.5 model on the CUDA
// backend (text encoder with host activations, UNet and VAE resident on the
// device, weights prefetched, the pool trimmed between phases) and on the
// CPU backend: the images agree to 35 dB PSNR, and the CUDA backend holds
// no tensor afterwards. Skips without a GPU.
func TestCUDAGenerateTiny(t *testing.T) {
	probe, err := tensor.NewCUDA(0)
	if err != nil {
		t.Skipf("CUDA backend unavailable (no GPU or driver): %v", err)
	}
	probe.Close()
	path := testckpt.Tiny(t, "single", tensor.F16)
	r := Request{Prompt: "a red fox in the snow", Negative: "blurry", Width: 32, Height: 24, Steps: 2, Seed: 5,
		Sampler: "euler"}
	cpu, err := Load(context.Background(), path, Options{Tokenizer: tinyTokenizer(t), Precision: "f32"})
	if err != nil {
		t.Fatal(err)
	}
	defer cpu.Close()
	want := gen(t, cpu, r).Image

	p, err := Load(context.Background(), path, Options{Tokenizer: tinyTokenizer(t), Backend: "cuda"})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	res := gen(t, p, r)
	db, err := imageio.PSNR(res.Image, want)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CUDA vs CPU: %.1f dB PSNR; backend %s", db, res.Params.Backend)
	if db < 35 {
		t.Errorf("CUDA image differs from the CPU image: %.1f dB PSNR, want at least 35", db)
	}
	c := p.Backend().(*tensor.CUDA)
	if n := c.LiveTensors(); n != 0 {
		t.Errorf("%d device tensors left allocated after Generate", n)
	}
	if m, err := c.Memory(); err != nil || m.Weights == 0 {
		t.Errorf("Memory() = %+v, %v; want weights on the device", m, err)
	}
}
