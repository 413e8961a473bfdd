package vae

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gosd/gosd/sd/imageio"
	"github.com/gosd/gosd/sd/tensor"
)

// shared is the read-only folder with the real TAEF2 weights and test images.
var shared = filepath.Join("..", "..", "..", "shared")

func loadTAEF2(t *testing.T) (enc, dec *Tiny) {
	t.Helper()
	dir := filepath.Join(shared, "models", "taef2")
	if _, err := os.Stat(filepath.Join(dir, "taef2_encoder.pth")); err != nil {
		t.Skipf("TAEF2 weights not present: %v", err)
	}
	enc, err := LoadTinyFile(filepath.Join(dir, "taef2_encoder.pth"))
	if err != nil {
		t.Fatal(err)
	}
	dec, err = LoadTinyFile(filepath.Join(dir, "taef2_decoder.pth"))
	if err != nil {
		t.Fatal(err)
	}
	return enc, dec
}

func TestTinyLoadTAEF2(t *testing.T) {
	enc, dec := loadTAEF2(t)
	if enc.Role != TinyEncoder || enc.LatentChannels != 32 || enc.Width != 64 || !enc.HasPool() {
		t.Errorf("encoder: role %v, C %d, W %d, pool %v; want encoder, 32, 64, true",
			enc.Role, enc.LatentChannels, enc.Width, enc.HasPool())
	}
	if dec.Role != TinyDecoder || dec.LatentChannels != 32 || dec.Width != 64 || !dec.HasPool() {
		t.Errorf("decoder: role %v, C %d, W %d, pool %v; want decoder, 32, 64, true",
			dec.Role, dec.LatentChannels, dec.Width, dec.HasPool())
	}
	// Pool branches sit in the lowest-resolution blocks only.
	var encPools, decPools []int
	for i, s := range enc.steps {
		if s.block != nil && s.block.pool0 != nil {
			encPools = append(encPools, i)
		}
	}
	for i, s := range dec.steps {
		if s.block != nil && s.block.pool0 != nil {
			decPools = append(decPools, i)
		}
	}
	// Steps count layers with weights plus clamp and upsampling; the decoder's
	// ReLU (module 2) is fused into step 1, so modules 3-5 are steps 2-4.
	if len(encPools) != 3 || encPools[0] != 11 || len(decPools) != 3 || decPools[0] != 2 {
		t.Errorf("pool blocks at encoder steps %v, decoder steps %v; want 11-13 and 2-4", encPools, decPools)
	}
}

// TestTinyRoundTripTAEF2 checks the TAEF2 round trip on real images against
// PSNRs from an independent PyTorch run of the taesd reference code (image
// in [0, 1], encoder, decoder, clamp, 8-bit rounding; PSNR over 8-bit RGB).
func TestTinyRoundTripTAEF2(t *testing.T) {
	enc, dec := loadTAEF2(t)
	be := tensor.NewCPU()
	cases := []struct {
		file  string
		w, h  int
		ref   float64
		heavy bool
	}{
		{"kodim03-gray256.png", 256, 256, 34.52, false},
		{"kodim01.png", 768, 512, 27.44, true},
		{"clic_flower.png", 992, 656, 32.34, true}, // 992x663 cropped from the top left
	}
	for _, c := range cases {
		t.Run(c.file, func(t *testing.T) {
			if c.heavy && testing.Short() {
				t.Skip("large image skipped in -short mode")
			}
			img, err := imageio.Load(filepath.Join(shared, "images", c.file))
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Now()
			out, psnr, err := RoundTrip(context.Background(), be, enc, dec, img)
			if err != nil {
				t.Fatal(err)
			}
			if b := out.Bounds(); b.Dx() != c.w || b.Dy() != c.h {
				t.Errorf("output %dx%d, want %dx%d", b.Dx(), b.Dy(), c.w, c.h)
			}
			t.Logf("%s: PSNR %.3f dB (reference %.2f) in %v on %s", c.file, psnr, c.ref, time.Since(t0), be.Name())
			if math.Abs(psnr-c.ref) > 0.3 {
				t.Errorf("PSNR %.3f dB, reference %.2f dB: off by more than 0.3 dB", psnr, c.ref)
			}
		})
	}
}

func TestTinyRoundTripFiles(t *testing.T) {
	dir := filepath.Join(shared, "models", "taef2")
	if _, err := os.Stat(filepath.Join(dir, "taef2_encoder.pth")); err != nil {
		t.Skipf("TAEF2 weights not present: %v", err)
	}
	out := filepath.Join(t.TempDir(), "rt.png")
	in := filepath.Join(shared, "images", "kodim03-gray256.png")
	r, err := RoundTripFiles(context.Background(), tensor.NewCPU(),
		filepath.Join(dir, "taef2_encoder.pth"), filepath.Join(dir, "taef2_decoder.pth"), in, out)
	if err != nil {
		t.Fatal(err)
	}
	if r.Width != 256 || r.Height != 256 || r.Cropped || !tensor.SameShape(r.LatentShape, []int{1, 32, 32, 32}) {
		t.Errorf("result %+v", r)
	}
	img, err := imageio.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := imageio.Load(in)
	p, _ := imageio.PSNR(src, img)
	if p != r.PSNR || math.Abs(p-34.52) > 0.3 {
		t.Errorf("written image PSNR %.3f, reported %.3f, reference 34.52", p, r.PSNR)
	}
	// Mismatched halves and bad files give errors.
	if _, err := RoundTripFiles(context.Background(), tensor.NewCPU(),
		filepath.Join(dir, "taef2_decoder.pth"), filepath.Join(dir, "taef2_decoder.pth"), in, ""); err == nil {
		t.Error("decoder accepted as encoder")
	}
	if _, err := RoundTripFiles(context.Background(), tensor.NewCPU(), in, in, in, ""); err == nil {
		t.Error("PNG accepted as weights")
	}
}
