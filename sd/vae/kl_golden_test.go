package vae

import (
	"reflect"
	"testing"
	"time"

	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// klGoldenTol bounds the relative error (max |got-want| / max |want|) of
// the decoded golden image. Measured: 3.2e-6 on the AVX-512 and 3.4e-6 on
// the portable CPU kernels. Group-norm eps 1e-5 instead of ldm's 1e-6 gives
// 3.9e-5, twice this bound; wrong upsampling or attention gives order 1.
const klGoldenTol = 2e-5

// TestKLGoldenSD15 decodes the golden run's final latents with the
// full-size random SD 1.5 autoencoder and compares with PyTorch's image.
func TestKLGoldenSD15(t *testing.T) {
	if testing.Short() {
		t.Skip("full-size VAE in -short mode")
	}
	gold := testckpt.GoldenDir(t)
	m, err := LoadKL(testckpt.OpenSD15(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m.Config, KLSD15Config()) || m.Encoder == nil {
		t.Fatalf("inferred %+v (encoder %v), want SD 1.5", m.Config, m.Encoder != nil)
	}
	lat := testckpt.ReadNpy(t, gold, "latent_final.npy", 4, 24, 32)
	want := testckpt.ReadNpy(t, gold, "image_f32.npy", 3, 192, 256)
	z := tensor.New(1, 4, 24, 32)
	for i, v := range lat {
		z.F32[i] = v / m.ScalingFactor
	}
	be := testckpt.GoldenBackend()
	start := time.Now()
	img, err := m.Decode(be, z)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: VAE decode 24x32 -> 192x256: %v", be.Name(), time.Since(start).Round(time.Millisecond))
	if !tensor.SameShape(img.Shape, []int{1, 3, 192, 256}) {
		t.Fatalf("image shape %v", img.Shape)
	}
	d, sc := klMaxDiff(img.F32, want)
	t.Logf("image_f32: max abs err %.3g, max |want| %.3g, relative %.3g", d, sc, d/sc)
	if d > klGoldenTol*sc {
		t.Errorf("relative error %.3g over %g", d/sc, klGoldenTol)
	}
}

// BenchmarkKLDecodeSD15 times decoding one 64x64 latent to a 512x512 image
// with the full-size autoencoder on the native CPU backend.
func BenchmarkKLDecodeSD15(b *testing.B) {
	m, err := LoadKL(testckpt.OpenSD15(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	z := klRand(1, 1, 4, 64, 64)
	be := tensor.NewCPU()
	b.ResetTimer()
	for range b.N {
		if _, err := m.Decode(be, z); err != nil {
			b.Fatal(err)
		}
	}
}
