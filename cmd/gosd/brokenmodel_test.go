package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// editedSource is the tiny model with one tensor left out and another
// given a wrong (same-size) shape.
type editedSource struct {
	*testmodel.Source
	drop, reshape string
}

func (s editedSource) Names() []string {
	return slices.DeleteFunc(s.Source.Names(), func(n string) bool { return n == s.drop })
}

func (s editedSource) Get(name string) (*tensor.Tensor, bool) {
	if name == s.drop {
		return nil, false
	}
	t, ok := s.Source.Get(name)
	if ok && name == s.reshape {
		shape := slices.Clone(t.Shape)
		shape[0], shape[1] = shape[1], shape[0]
		t = tensor.FromF32(t.F32, shape...)
	}
	return t, ok
}

func (s editedSource) Stored(name string) (string, []int, bool) {
	if name == s.drop {
		return "", nil, false
	}
	dt, shape, ok := s.Source.Stored(name)
	if ok && name == s.reshape {
		shape[0], shape[1] = shape[1], shape[0]
	}
	return dt, shape, ok
}

// copyTree copies the folder src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestGenerateBrokenModels: checkpoints that open but are incomplete or
// inconsistent (missing or misshapen tensors, diffusers folders with missing
// or truncated weights or broken configs, a truncated .ckpt) fail with an
// error naming the file and the tensor or config at fault.
func TestGenerateBrokenModels(t *testing.T) {
	tok := tokenizerDir(t)
	dir := t.TempDir()
	src, err := testmodel.NewSource(testmodel.Options{Size: "tiny", DType: tensor.F32, Seed: testmodel.DefaultSeed})
	if err != nil {
		t.Fatal(err)
	}
	edited := func(name string, es editedSource) string {
		es.Source = src
		p := filepath.Join(dir, name)
		if err := ckpt.WriteSafetensors(p, es, ckpt.WriteOptions{}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const (
		dropped    = "model.diffusion_model.middle_block.1.transformer_blocks.0.ff.net.2.weight"
		badVAE     = "first_stage_model.decoder.up.0.block.0.conv1.weight"            // [32 64 3 3]
		badUNet    = "model.diffusion_model.output_blocks.1.0.skip_connection.weight" // [64 96 1 1]
		badText    = "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc1.weight"
		droppedVAE = "first_stage_model.decoder.mid.attn_1.q.weight"
	)
	missing := edited("missing-tensor.safetensors", editedSource{drop: dropped})
	missingVAE := edited("missing-vae-tensor.safetensors", editedSource{drop: droppedVAE})
	misshapenVAE := edited("misshapen-vae.safetensors", editedSource{reshape: badVAE})
	misshapenUNet := edited("misshapen-unet.safetensors", editedSource{reshape: badUNet})
	misshapenText := edited("misshapen-text.safetensors", editedSource{reshape: badText})
	good, err := os.ReadFile(tinyModel(t, "ckpt", tensor.F16))
	if err != nil {
		t.Fatal(err)
	}
	truncCkpt := writeFile(t, dir, "trunc.ckpt", good[:len(good)*2/3])

	diff := tinyModel(t, "diffusers", tensor.F16)
	variant := func(name string, edit func(root string)) string {
		root := filepath.Join(dir, name)
		copyTree(t, diff, root)
		edit(root)
		return root
	}
	noVAE := variant("no-vae-weights", func(root string) {
		os.Remove(filepath.Join(root, "vae", "diffusion_pytorch_model.safetensors"))
	})
	truncUNet := variant("trunc-unet", func(root string) {
		p := filepath.Join(root, "unet", "diffusion_pytorch_model.safetensors")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, b[:len(b)/2], 0o644)
	})
	badConfig := variant("bad-config", func(root string) {
		os.WriteFile(filepath.Join(root, "vae", "config.json"), []byte("{not json"), 0o644)
	})
	noUNet := variant("no-unet", func(root string) { os.RemoveAll(filepath.Join(root, "unet")) })
	emptyDir := filepath.Join(dir, "empty-folder")
	os.Mkdir(emptyDir, 0o755)

	for _, c := range []struct {
		name, model string
		want        []string
	}{
		{"missing UNet tensor", missing, []string{"middle_block.1.transformer_blocks.0.ff.net.2.weight"}},
		{"missing VAE tensor", missingVAE, []string{"decoder.mid.attn_1.q.weight"}},
		{"misshapen VAE tensor", misshapenVAE, []string{badVAE, "[64 32 3 3]", "[32 64 3 3]"}},
		{"misshapen UNet tensor", misshapenUNet, []string{badUNet, "[96 64 1 1]", "[64 96 1 1]"}},
		{"misshapen text tensor", misshapenText, []string{"layers.1.mlp.fc1.weight", "[64 256]", "[256 64]"}},
		{"truncated ckpt", truncCkpt, []string{"trunc.ckpt", "truncated"}},
		{"diffusers without VAE weights", noVAE, []string{"no-vae-weights", "vae", "no weights file"}},
		{"diffusers truncated UNet", truncUNet, []string{"trunc-unet", "diffusion_pytorch_model.safetensors", "truncated"}},
		{"diffusers broken config", badConfig, []string{"bad-config", "config.json", "not valid JSON"}},
		{"diffusers without unet", noUNet, []string{"no-unet", "unet"}},
		{"empty folder", emptyDir, []string{"empty-folder"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			outDir := t.TempDir()
			out := filepath.Join(outDir, "out.png")
			r := runCLI(t, "generate", "--model", c.model, "--tokenizer", tok, "--prompt", "a fox",
				"--width", "16", "--height", "16", "--steps", "1", "--output", out)
			if r.code != 1 {
				t.Errorf("exit %d, want 1", r.code)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			assertNoFile(t, out)
			if left := dirEntries(t, outDir); len(left) > 0 {
				t.Errorf("output folder holds %v", left)
			}
		})
	}
}
