package clip

import (
	"path/filepath"
	"slices"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// TestLayouts writes the tiny random SD 1.5 model in the single-file,
// PyTorch zip and diffusers layouts, opens each with ckpt.Open and checks
// that the text model loads from all three (the diffusers one also through
// its text_encoder/config.json and tokenizer/ folder) and gives identical
// embeddings.
func TestLayouts(t *testing.T) {
	cfgDir := sharedPath(t, "models", "sd15")
	dir := t.TempDir()
	tok := sd15Tokenizer(t)
	ids, _ := tok.Pad77(tok.Encode("a watercolor painting of a fox in a snowy forest"))
	be := tensor.NewCPU()
	var first []float32
	for _, layout := range []string{"single", "ckpt", "diffusers"} {
		out := filepath.Join(dir, "tiny-"+layout)
		err := testmodel.Write(testmodel.Options{Size: "tiny", DType: tensor.F16, Layout: layout,
			Seed: testmodel.DefaultSeed, Output: out, ConfigDir: cfgDir})
		if err != nil {
			t.Fatalf("%s: %v", layout, err)
		}
		c, err := ckpt.Open(out, ckpt.Options{})
		if err != nil {
			t.Fatalf("%s: %v", layout, err)
		}
		defer c.Close()
		var cfg *Config
		if layout == "diffusers" {
			if c.Diffusers == nil || c.Diffusers.TokenizerDir == "" {
				t.Fatal("diffusers checkpoint without tokenizer folder")
			}
			dt, err := LoadTokenizer(c.Diffusers.TokenizerDir)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := dt.Pad77(dt.Encode("a watercolor painting of a fox in a snowy forest")); !slices.Equal(got, ids) {
				t.Errorf("diffusers tokenizer gives %v, want %v", got, ids)
			}
			pc, err := ParseConfig(c.Diffusers.Configs["text_encoder"])
			if err != nil {
				t.Fatal(err)
			}
			cfg = &pc
		}
		m, err := Load(c, Prefix, cfg)
		if err != nil {
			t.Fatalf("%s: %v", layout, err)
		}
		if want := (Config{Hidden: 64, Layers: 2, Heads: 1, FF: 256, Vocab: 49408, MaxPos: 77,
			Act: tensor.QuickGELU, Eps: 1e-5}); m.Config != want {
			t.Errorf("%s: config %+v, want %+v", layout, m.Config, want)
		}
		y, err := m.Encode(be, [][]int{ids}, 1)
		if err != nil {
			t.Fatalf("%s: %v", layout, err)
		}
		if first == nil {
			first = y.F32
			continue
		}
		if d, _ := maxDiff(y.F32, f64(first)); d != 0 {
			t.Errorf("%s layout differs from single-file by %.3g", layout, d)
		}
	}
}
