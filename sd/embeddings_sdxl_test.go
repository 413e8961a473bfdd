package sd

import (
	"bytes"
	"context"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// TestSDXLEmbeddings: an SDXL textual-inversion file (clip_l and clip_g
// vectors) used by name in a prompt feeds each text encoder its own vectors
// and changes the image; an SD 1.x embedding in the folder is refused by name.
func TestSDXLEmbeddings(t *testing.T) {
	path := writeFamily(t, "sdxl", "single")
	tok := filepath.Join(testckpt.SharedDir(t), "models", "sd15", "tokenizer")
	r := rand.New(rand.NewPCG(7, 7))
	vec := func(n, c int) *tensor.Tensor {
		v := tensor.New(n, c)
		for i := range v.F32 {
			v.F32[i] = float32(r.NormFloat64())
		}
		return v
	}
	dir := t.TempDir()
	// Tiny SDXL: CLIP ViT-L 64 wide, OpenCLIP 128 wide.
	if err := ckpt.WriteSafetensors(filepath.Join(dir, "zqstyle.safetensors"),
		tensor.MapSource{"clip_l": vec(2, 64), "clip_g": vec(2, 128)}, ckpt.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	p, err := Load(context.Background(), path, Options{Tokenizer: tok, EmbeddingsDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	gen := func(prompt string) []byte {
		t.Helper()
		req := familyRequest()
		req.Prompt = prompt
		res, err := p.Generate(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return nrgba(res.Image)
	}
	if bytes.Equal(gen("a fox, zqstyle"), gen("a fox, zqstylo")) {
		t.Error("the SDXL embedding did not change the image")
	}

	sd1 := t.TempDir()
	if err := ckpt.WriteSafetensors(filepath.Join(sd1, "old.safetensors"),
		tensor.MapSource{"emb_params": vec(1, 768)}, ckpt.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err = Load(context.Background(), path, Options{Tokenizer: tok, EmbeddingsDir: sd1})
	if err == nil || !strings.Contains(err.Error(), "old.safetensors") || !strings.Contains(err.Error(), "clip_l") {
		t.Errorf("SD 1.x embedding on SDXL: err = %v", err)
	}
}
