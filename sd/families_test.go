package sd

import (
	"context"
	"image"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// writeFamily writes a tiny random model of family in layout and returns its path.
func writeFamily(t *testing.T, family, layout string) string {
	t.Helper()
	name := map[string]string{"single": "m.safetensors", "ckpt": "m.ckpt", "diffusers": "m"}[layout]
	out := filepath.Join(t.TempDir(), name)
	opts := testmodel.Options{Family: family, Size: "tiny", DType: tensor.F16, Layout: layout, Seed: testmodel.DefaultSeed, Output: out}
	if layout == "diffusers" {
		shared := testckpt.SharedDir(t)
		opts.ConfigDir = filepath.Join(shared, "models", family)
		opts.TokenizerDir = filepath.Join(shared, "models", "sd15", "tokenizer")
	}
	if err := testmodel.Write(opts); err != nil {
		t.Fatal(err)
	}
	return out
}

func generateFamily(t *testing.T, path, pred string, req Request) (*Pipeline, *Result) {
	t.Helper()
	tok := filepath.Join(testckpt.SharedDir(t), "models", "sd15", "tokenizer")
	p, err := Load(context.Background(), path, Options{Tokenizer: tok, Prediction: pred})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	res, err := p.Generate(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return p, res
}

func samePixels(t *testing.T, what string, a, b image.Image) {
	t.Helper()
	if a.Bounds() != b.Bounds() {
		t.Fatalf("%s: bounds %v vs %v", what, a.Bounds(), b.Bounds())
	}
	pa, pb := pixels(a), pixels(b)
	for i := range pa {
		if pa[i] != pb[i] {
			t.Fatalf("%s: pixel byte %d differs: %d vs %d", what, i, pa[i], pb[i])
		}
	}
}

// spread reports the standard deviation of an image's bytes, to show it is not flat.
func spread(img image.Image) float64 {
	pix := pixels(img)
	var s, s2 float64
	for _, v := range pix {
		s += float64(v)
		s2 += float64(v) * float64(v)
	}
	n := float64(len(pix))
	return math.Sqrt(s2/n - (s/n)*(s/n))
}

// pixels returns an image's 8-bit RGBA bytes.
func pixels(img image.Image) []uint8 {
	switch m := img.(type) {
	case *image.RGBA:
		return m.Pix
	case *image.NRGBA:
		return m.Pix
	}
	panic("unexpected image type")
}

func familyRequest() Request {
	return Request{Prompt: "a (red:1.2) fox, BREAK snow", Negative: "blurry", Width: 64, Height: 48, Steps: 2,
		CFG: 5, Sampler: "euler", Seed: 7}
}

func TestFamiliesAcrossLayouts(t *testing.T) {
	for _, fam := range []struct{ name, family, pred string }{
		{"sd21", "sd2", "v"}, {"sdxl", "sdxl", "eps"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			var ref *Result
			for _, layout := range []string{"single", "ckpt", "diffusers"} {
				path := writeFamily(t, fam.name, layout)
				pred := fam.pred
				if layout == "diffusers" {
					pred = "" // read from scheduler_config.json
				}
				p, res := generateFamily(t, path, pred, familyRequest())
				if p.Family() != fam.family || p.Prediction() != fam.pred {
					t.Fatalf("%s: family %s prediction %s, want %s %s", layout, p.Family(), p.Prediction(), fam.family, fam.pred)
				}
				if sd := spread(res.Image); sd < 1 {
					t.Fatalf("%s: flat image (std %.3f)", layout, sd)
				}
				if ref == nil {
					ref = res
					continue
				}
				samePixels(t, fam.name+" single vs "+layout, ref.Image, res.Image)
			}
		})
	}
}

// TestFamilyPrediction: an SD 2.x single file without an explicit choice
// runs A1111's v-parameterization test (a random model is not v), an
// explicit "v" changes the image, a bad value is refused, and loading
// reads every tensor except the known extras (no warning).
func TestFamilyPrediction(t *testing.T) {
	path := writeFamily(t, "sd21", "single")
	req := familyRequest()
	p, eps := generateFamily(t, path, "", req)
	if p.Prediction() != PredictionEps || p.PredictionSource() != "a1111-test" {
		t.Fatalf("detected %s (%s) for a random SD 2.x model, want eps (a1111-test)", p.Prediction(), p.PredictionSource())
	}
	pv, v := generateFamily(t, path, "v", req)
	if pv.PredictionSource() != "option" {
		t.Fatalf("explicit v: source %s", pv.PredictionSource())
	}
	if slices.Equal(pixels(eps.Image), pixels(v.Image)) {
		t.Fatal("v-prediction gave the eps image")
	}
	tok := filepath.Join(testckpt.SharedDir(t), "models", "sd15", "tokenizer")
	if _, err := Load(context.Background(), path, Options{Tokenizer: tok, Prediction: "x0"}); err == nil ||
		!strings.Contains(err.Error(), "x0") {
		t.Fatalf("bad prediction type: %v", err)
	}
	for _, c := range []struct{ path, pred, src string }{
		{path, "", "a1111-test"}, {writeFamily(t, "sdxl", "single"), "eps", "family"},
		{writeFamily(t, "sd21", "diffusers"), "v", "scheduler_config.json"},
	} {
		ck, err := ckpt.Open(c.path, ckpt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		pred, src, err := PredictionHint(ck)
		ck.Close()
		if err != nil || pred != c.pred || src != c.src {
			t.Errorf("%s: hint %q %q %v, want %q %q", c.path, pred, src, err, c.pred, c.src)
		}
		m := c.path
		var logs strings.Builder
		q, err := Load(context.Background(), m, Options{Tokenizer: tok, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		q.Close()
		if strings.Contains(logs.String(), "does not use") {
			t.Fatalf("%s: unexpected warning: %s", m, logs.String())
		}
	}
}
