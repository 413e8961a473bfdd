package sd

import (
	"bytes"
	"context"
	"math"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// TestVAEOverride writes the tiny model's own VAE as a standalone file in
// the three layouts VAE files come in; each must give the model's own image.
// A VAE with other weights must change it, and one with NaN weights must
// fail with an error instead of returning a black image.
func TestVAEOverride(t *testing.T) {
	path := testckpt.Tiny(t, "single", tensor.F16)
	ck, err := ckpt.Open(path, ckpt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	var ldm []string
	for _, n := range ck.Names() {
		if strings.HasPrefix(n, prefixVAE) {
			ldm = append(ldm, n)
		}
	}
	km, err := ckpt.NewKeyMap(ldm)
	if err != nil {
		t.Fatal(err)
	}
	prefixed, bare, diff, scaled, broken := tensor.MapSource{}, tensor.MapSource{}, tensor.MapSource{}, tensor.MapSource{}, tensor.MapSource{}
	for _, n := range ldm {
		w, _ := ck.Get(n)
		prefixed[n] = w
		bare[strings.TrimPrefix(n, prefixVAE)] = w
		d, ok := km.ToDiffusers(n)
		if !ok {
			t.Fatalf("no diffusers name for %s", n)
		}
		dw := w
		if strings.Contains(n, ".mid.attn_1.") && len(w.Shape) == 4 && strings.HasSuffix(n, ".weight") {
			dw = w.Reshape(w.Shape[0], w.Shape[1]) // diffusers stores linear matrices
		}
		diff[strings.TrimPrefix(d, "vae/")] = dw
		f := w.ToF32().Clone()
		bad := f.Clone()
		for i := range f.F32 {
			f.F32[i] *= 1.5
		}
		if n == prefixVAE+"decoder.conv_out.bias" {
			bad.F32[0] = float32(math.NaN())
		}
		scaled[n], broken[n] = f, bad
	}
	dir := t.TempDir()
	write := func(name string, src tensor.MapSource) string {
		p := filepath.Join(dir, name)
		if err := ckpt.WriteSafetensors(p, src, ckpt.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	req := Request{Prompt: "a fox", Width: 32, Height: 32, Steps: 2, Sampler: "euler", Seed: 5}
	gen := func(vae string) ([]byte, error) {
		p, err := Load(context.Background(), path, Options{Tokenizer: tinyTokenizer(t), VAE: vae})
		if err != nil {
			return nil, err
		}
		defer p.Close()
		res, err := p.Generate(context.Background(), req)
		if err != nil {
			return nil, err
		}
		return nrgba(res.Image), nil
	}
	base, err := gen("")
	if err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]tensor.MapSource{"prefixed": prefixed, "bare": bare, "diffusers": diff} {
		got, err := gen(write(name+".safetensors", src))
		if err != nil {
			t.Fatalf("%s VAE: %v", name, err)
		}
		if !bytes.Equal(got, base) {
			t.Errorf("%s VAE: image differs from the model's own VAE", name)
		}
	}
	if got, err := gen(write("scaled.safetensors", scaled)); err != nil || bytes.Equal(got, base) {
		t.Errorf("other VAE weights: err %v, image unchanged %v", err, bytes.Equal(got, base))
	}
	if _, err := gen(write("broken.safetensors", broken)); err == nil || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("NaN VAE: err = %v, want a NaN error", err)
	}
	unet := tensor.MapSource{"model.diffusion_model.out.2.bias": tensor.New(4)}
	if _, err := gen(write("notvae.safetensors", unet)); err == nil || !strings.Contains(err.Error(), "no VAE decoder") {
		t.Errorf("non-VAE file: err = %v", err)
	}
}
