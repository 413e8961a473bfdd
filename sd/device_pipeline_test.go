package sd

import (
	"context"
	"image"
	"sync"
	"testing"

	"github.com/gosd/gosd/sd/imageio"
	"github.com/gosd/gosd/sd/internal/devtest"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/nn"
	"github.com/gosd/gosd/sd/tensor"
)

// TestDevicePipeline generates on a device backend (devtest over the CPU
// backend, as the CUDA backend is driven) and checks what the pipeline owes
// a GPU: the CPU backend's pixels; the UNet's weights prefetched before
// sampling and the VAE's during it; a sampling step that hands no host
// activation to any op and crosses to the device and back only for the
// latents; the text context uploaded once; nothing left allocated.
func TestDevicePipeline(t *testing.T) {
	backendFactories["devtest"] = func(o backendOpts) (tensor.Backend, error) {
		return devtest.New(tensor.NewCPU()), nil
	}
	t.Cleanup(func() { delete(backendFactories, "devtest") })
	path := testckpt.Tiny(t, "single", tensor.F32)
	r := Request{Prompt: "a red fox", Negative: "blurry", Width: 24, Height: 16, Steps: 4, Seed: 3, Sampler: "euler"}

	cpu, err := Load(context.Background(), path, Options{Tokenizer: tinyTokenizer(t), Precision: "f32"})
	if err != nil {
		t.Fatal(err)
	}
	defer cpu.Close()
	want := nrgba(gen(t, cpu, r).Image)

	p, err := Load(context.Background(), path, Options{Tokenizer: tinyTokenizer(t), Backend: "devtest", Profile: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	dev := p.Backend().(*devtest.Backend)
	var mu sync.Mutex
	var at []devtest.Stats // the counters at each progress report
	r.Progress = func(Progress) {
		mu.Lock()
		at = append(at, dev.Stats())
		mu.Unlock()
	}
	if got := nrgba(gen(t, p, r).Image); string(got) != string(want) {
		t.Error("the device backend's pixels differ from the CPU backend's")
	}
	end := dev.Stats()
	if end.Live != 0 {
		t.Errorf("%d device tensors left allocated after the generation", end.Live)
	}
	nu, nv := len(nn.Weights(p.unet)), len(nn.Weights(p.vae))
	if len(end.Prefetch) != 2 || end.Prefetch[0] != nu || end.Prefetch[1] != nv {
		t.Errorf("prefetched %v weights, want the UNet's %d then the VAE's %d", end.Prefetch, nu, nv)
	}
	if end.Trims == 0 {
		t.Error("the device activation pool was never trimmed between phases")
	}
	if len(at) < 3 {
		t.Fatalf("%d progress reports for %d steps", len(at), r.Steps)
	}
	for i := 1; i < len(at); i++ {
		a, b := at[i-1], at[i]
		step := [4]int{b.ToDevice - a.ToDevice, b.ToHost - a.ToHost, b.HostInput - a.HostInput, b.HostOut - a.HostOut}
		// Per step: the latents and the timestep embedding go up, eps comes back.
		if step != [4]int{2, 1, 0, 0} || b.Live != 1 {
			t.Errorf("step %d: [uploads, copies back, host inputs, host outputs] %v with %d tensors live; want [2 1 0 0], "+
				"only the text context live", i+1, step, b.Live)
		}
	}
}

// TestDeviceVAEUpcast: on a device backend whose products round activations
// to the weights' 16-bit type (devtest.Round16, as the CUDA backend's tensor
// cores do), a VAE whose activations leave f16's range decodes to Inf; the
// pipeline then converts the VAE's weights to f32 and decodes again, giving
// the CPU backend's image (which never rounds to f16), as AUTOMATIC1111's
// automatic VAE upcast does.
func TestDeviceVAEUpcast(t *testing.T) {
	backendFactories["devtest16"] = func(o backendOpts) (tensor.Backend, error) {
		b := devtest.New(tensor.NewCPU())
		b.Round16 = true
		return b, nil
	}
	t.Cleanup(func() { delete(backendFactories, "devtest16") })
	path := testckpt.Tiny(t, "single", tensor.F16)
	r := Request{Prompt: "a red fox", Width: 24, Height: 16, Steps: 2, Seed: 3, Sampler: "euler"}
	// Scale the decoder's first two convolutions so that the residual stream
	// reaches ~1e6, far beyond f16's 65504.
	loud := func(p *Pipeline) {
		for _, w := range []*tensor.Tensor{p.vae.PostQuantConv.Weight, p.vae.Decoder.ConvIn.Weight} {
			h := make([]uint16, w.Numel())
			for i, v := range w.Float32s() {
				h[i] = tensor.F32ToF16(v * 1e4)
			}
			*w = *tensor.FromHalf(h, tensor.F16, w.Shape...)
		}
	}
	var want image.Image
	for _, be := range []string{"cpu", "devtest16"} {
		p, err := Load(context.Background(), path, Options{Tokenizer: tinyTokenizer(t), Backend: be, Precision: "f32"})
		if err != nil {
			t.Fatal(err)
		}
		loud(p)
		res := gen(t, p, r)
		if be == "cpu" {
			want = res.Image
		} else if db, err := imageio.PSNR(res.Image, want); err != nil || db < 35 {
			// The UNet's f16 rounding makes the latents differ slightly.
			t.Errorf("the upcast device decode is %.1f dB from the CPU decode (%v), want at least 35", db, err)
		}
		// The weights are converted only after a decode that was not finite.
		if w := p.vae.Decoder.ConvIn.Weight; be == "devtest16" && w.DType != tensor.F32 {
			t.Errorf("VAE weights are %v after the decode, want f32 (no retry?)", w.DType)
		}
		p.Close()
	}
}
