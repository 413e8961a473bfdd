//go:build cuda

package unet_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
	"github.com/gosd/gosd/sd/unet"
	"github.com/gosd/gosd/sd/vae"
)

// The whole UNet and VAE on the CUDA backend, with activations resident on
// the device, against the CPU backend (f32 products), and SD 1.5's sampling
// step and VAE decode at 512x512 timed on a full-size random-weight model.
// Every test skips without a GPU. Errors are max|gpu-cpu| / RMS(cpu) and
// RMS(gpu-cpu) / RMS(cpu); f16 weights round activations to 2^-11 before
// every product, and a UNet chains about 100 of them.

func openCUDA(t testing.TB) *tensor.CUDA {
	t.Helper()
	c, err := tensor.NewCUDA(0)
	if err != nil {
		t.Skipf("CUDA backend unavailable (no GPU or driver): %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// compareModel fails t when the errors of got against want exceed maxTol
// (max error) or rmsTol (RMS error), and appends the comparison to
// $GOSD_CUDA_REPORT as bench/gpu/run.sh expects.
func compareModel(t *testing.T, op, name string, got, want []float32, maxTol, rmsTol float64) {
	t.Helper()
	var mx, ss, sd float64
	for i := range want {
		d := math.Abs(float64(got[i]) - float64(want[i]))
		if math.IsNaN(d) {
			d = math.Inf(1)
		}
		mx = math.Max(mx, d)
		sd += d * d
		ss += float64(want[i]) * float64(want[i])
	}
	rms := math.Sqrt(ss / float64(len(want)))
	eMax, eRMS := mx/rms, math.Sqrt(sd/float64(len(want)))/rms
	pass := eMax <= maxTol && eRMS <= rmsTol
	if path := os.Getenv("GOSD_CUDA_REPORT"); path != "" {
		rec := map[string]any{"op": op, "case": name, "max_err_over_rms": eMax, "tol": maxTol,
			"rms_err_over_rms": eRMS, "pass": pass, "values": len(want)}
		if math.IsInf(eMax, 0) || math.IsNaN(eMax) {
			rec["max_err_over_rms"] = -1
			rec["rms_err_over_rms"] = -1
		}
		if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			b, _ := json.Marshal(rec)
			f.Write(append(b, '\n'))
			f.Close()
		}
	}
	if !pass {
		t.Errorf("%s %s: max error %.3g (tolerance %g), RMS error %.3g (tolerance %g) of RMS %.3g",
			op, name, eMax, maxTol, eRMS, rmsTol, rms)
	}
}

func filled(seed int, shape ...int) *tensor.Tensor {
	x := tensor.New(shape...)
	for i := range x.F32 {
		x.F32[i] = float32((i*7919+seed*104729)%2001)/1000 - 1
	}
	return x
}

// TestCUDAUNetTiny: tiny SD 1.5 and SDXL UNets (f16 weights), device-resident
// on the GPU, against the CPU backend; every device tensor is freed.
func TestCUDAUNetTiny(t *testing.T) {
	c := openCUDA(t)
	cpu := tensor.NewCPU()
	for _, fam := range []string{"sd15", "sdxl"} {
		u := familyUNet(t, testmodel.Options{Family: fam, Size: "tiny", DType: tensor.F16, Seed: 5})
		cfg := u.Config
		for _, sz := range [][2]int{{8, 8}, {7, 5}} {
			x, ctx := filled(1, 2, cfg.InChannels, sz[0], sz[1]), filled(2, 2, 5, cfg.ContextDim)
			var y *tensor.Tensor
			if cfg.ADMChannels > 0 {
				y = filled(3, 2, cfg.ADMChannels)
			}
			ts := []float32{999, 250}
			want, err := u.ForwardADM(cpu, x, ts, ctx, y)
			if err != nil {
				t.Fatal(err)
			}
			got, err := u.ForwardADM(c, x, ts, ctx, y)
			if err != nil {
				t.Fatal(err)
			}
			compareModel(t, "unet", fmt.Sprintf("tiny %s %dx%d f16", fam, sz[0], sz[1]), got.F32, want.F32, 5e-2, 1e-2)
			if n := c.LiveTensors(); n != 0 {
				t.Errorf("%s %v: %d device tensors left allocated", fam, sz, n)
			}
		}
	}
}

// TestCUDAVAETiny: the tiny SD 1.5 KL autoencoder (f16 weights) decodes and
// encodes on the GPU, device-resident, as on the CPU backend.
func TestCUDAVAETiny(t *testing.T) {
	c := openCUDA(t)
	cpu := tensor.NewCPU()
	src, err := testmodel.NewSource(testmodel.Options{Family: "sd15", Size: "tiny", DType: tensor.F16, Seed: 6})
	if err != nil {
		t.Fatal(err)
	}
	v, err := vae.LoadKL(src, nil)
	if err != nil {
		t.Fatal(err)
	}
	z := filled(7, 1, 4, 6, 5)
	want, err := v.Decode(cpu, z)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Decode(c, z)
	if err != nil {
		t.Fatal(err)
	}
	compareModel(t, "vae_decode", "tiny sd15 6x5 f16", got.F32, want.F32, 5e-2, 1e-2)
	wm, _, err := v.Encode(cpu, want)
	if err != nil {
		t.Fatal(err)
	}
	gm, _, err := v.Encode(c, want)
	if err != nil {
		t.Fatal(err)
	}
	compareModel(t, "vae_encode", "tiny sd15 mean f16", gm.F32, wm.F32, 5e-2, 1e-2)
	if n := c.LiveTensors(); n != 0 {
		t.Errorf("%d device tensors left allocated", n)
	}
}

var full struct {
	once sync.Once
	u    *unet.UNet
	v    *vae.KL
	err  error
}

// fullSD15 builds the full-size SD 1.5 UNet and VAE with random f16 weights
// in memory (the layout and shapes of the real checkpoint; about 20 s).
func fullSD15(t testing.TB) (*unet.UNet, *vae.KL) {
	t.Helper()
	full.once.Do(func() {
		src, err := testmodel.NewSource(testmodel.Options{Family: "sd15", Size: "full", DType: tensor.F16, Seed: 1})
		if err == nil {
			full.u, err = unet.Load(src, nil)
		}
		if err == nil {
			full.v, err = vae.LoadKL(src, nil)
		}
		full.err = err
	})
	if full.err != nil {
		t.Fatal(full.err)
	}
	return full.u, full.v
}

// TestCUDASD15Full: the full-size SD 1.5 UNet (batch 2 at 32x32 latents,
// 256x256 pixels) and VAE decoder (32x32 latents) on the GPU against the CPU.
func TestCUDASD15Full(t *testing.T) {
	c := openCUDA(t)
	u, v := fullSD15(t)
	cpu := tensor.NewCPU()
	x, ctx := filled(4, 2, 4, 32, 32), filled(5, 2, 77, 768)
	ts := []float32{801, 801}
	want, err := u.Forward(cpu, x, ts, ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, err := u.Forward(c, x, ts, ctx)
	if err != nil {
		t.Fatal(err)
	}
	compareModel(t, "unet", "sd15 full 32x32 batch 2 f16", got.F32, want.F32, 5e-2, 1e-2)
	z := filled(6, 1, 4, 32, 32)
	wi, err := v.Decode(cpu, z)
	if err != nil {
		t.Fatal(err)
	}
	gi, err := v.Decode(c, z)
	if err != nil {
		t.Fatal(err)
	}
	compareModel(t, "vae_decode", "sd15 full 32x32 f16", gi.F32, wi.F32, 5e-2, 1e-2)
	if n := c.LiveTensors(); n != 0 {
		t.Errorf("%d device tensors left allocated", n)
	}
}

// BenchmarkCUDASD15Step times one sampling step of SD 1.5 at 512x512 with
// classifier-free guidance (the UNet on a batch of 2 per image) for 1 and 4
// images; weights are on the device before the timer starts. Metrics:
// s/step, steps/s, img/s for 20 steps (UNet only), and the device memory.
func BenchmarkCUDASD15Step(b *testing.B) {
	c := openCUDA(b)
	u, _ := fullSD15(b)
	for _, images := range []int{1, 4} {
		b.Run(fmt.Sprintf("512_b%d", images), func(b *testing.B) {
			n := 2 * images
			x := filled(7, n, 4, 64, 64)
			ctx, err := c.ToDevice(filled(8, n, 77, 768)) // as the pipeline holds it
			if err != nil {
				b.Fatal(err)
			}
			defer tensor.Release(ctx)
			ts := make([]float32, n)
			for i := range ts {
				ts[i] = 500
			}
			step := func() {
				y, err := u.Forward(c, x, ts, ctx)
				if err != nil {
					b.Fatal(err)
				}
				tensor.Release(y)
			}
			step() // uploads the weights, fills the activation pool
			step()
			b.ResetTimer()
			t0 := time.Now()
			for i := 0; i < b.N; i++ {
				step()
			}
			s := time.Since(t0).Seconds() / float64(b.N)
			b.StopTimer()
			b.ReportMetric(s, "s/step")
			b.ReportMetric(1/s, "steps/s")
			b.ReportMetric(float64(images)/(20*s), "img/s@20")
			if m, err := c.Memory(); err == nil {
				b.ReportMetric(float64(m.Weights+m.PeakPool)/(1<<20), "MiB-peak-gosd")
				b.ReportMetric(float64(m.DeviceUse)/(1<<20), "MiB-device-used")
			}
		})
	}
}

// BenchmarkCUDASD15VAEDecode512 times the VAE decoder on one 64x64 latent.
func BenchmarkCUDASD15VAEDecode512(b *testing.B) {
	c := openCUDA(b)
	_, v := fullSD15(b)
	z := filled(9, 1, 4, 64, 64)
	dec := func() {
		img, err := v.Decode(c, z)
		if err != nil {
			b.Fatal(err)
		}
		tensor.Release(img)
	}
	dec()
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		dec()
	}
	ms := time.Since(t0).Seconds() * 1000 / float64(b.N)
	b.StopTimer()
	b.ReportMetric(ms, "ms/decode")
	if m, err := c.Memory(); err == nil {
		b.ReportMetric(float64(m.Weights+m.PeakPool)/(1<<20), "MiB-peak-gosd")
	}
}
