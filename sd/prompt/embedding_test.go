package prompt

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/pttest"
	"github.com/gosd/gosd/sd/tensor"
)

// writeA1111PT writes what AUTOMATIC1111's textual-inversion training saves
// with torch.save: {"string_to_token": {"*": 265}, "string_to_param":
// {"*": tensor [n, c] f32}, "name": name, "step": 10}, as a PyTorch zip.
func writeA1111PT(t *testing.T, path string, v *tensor.Tensor) {
	t.Helper()
	b, err := pttest.A1111Embedding("x", "trained", v.F32, v.Shape[0], v.Shape[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func sameValues(a, b *tensor.Tensor) bool {
	if !tensor.SameShape(a.Shape, b.Shape) {
		return false
	}
	av, bv := a.Float32s(), b.Float32s()
	for i := range av {
		if av[i] != bv[i] {
			return false
		}
	}
	return true
}

func TestLoadEmbeddingFormats(t *testing.T) {
	dir := t.TempDir()
	ptVec := vec(3, 64, 1)
	writeA1111PT(t, filepath.Join(dir, "pt-style.pt"), ptVec)
	stVec := vec(2, 64, 2)
	if err := ckpt.WriteSafetensors(filepath.Join(dir, "st-style.safetensors"),
		tensor.MapSource{"emb_params": stVec}, ckpt.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	binVec := vec(1, 64, 3).Reshape(64) // diffusers concept: {"<token>": [C]}
	if err := ckpt.WriteTorchZip(filepath.Join(dir, "concept.bin"),
		tensor.MapSource{"<concept>": binVec}, ckpt.WriteOptions{}, false); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("ignored"), 0o644)
	sub := filepath.Join(dir, "sub")
	os.Mkdir(sub, 0o755)
	h16 := tensor.FromHalf([]uint16{tensor.F32ToF16(0.5), tensor.F32ToF16(-2)}, tensor.F16, 1, 2)
	if err := ckpt.WriteSafetensors(filepath.Join(sub, "half.safetensors"), tensor.MapSource{"emb_params": h16}, ckpt.WriteOptions{}); err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		file string
		want *tensor.Tensor
	}{
		{"pt-style.pt", ptVec}, {"st-style.safetensors", stVec}, {"concept.bin", binVec.Reshape(1, 64)},
		{"sub/half.safetensors", tensor.FromF32([]float32{0.5, -2}, 1, 2)},
	} {
		e, err := LoadEmbedding(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatalf("%s: %v", c.file, err)
		}
		base := filepath.Base(c.file)
		if e.Name != strings.TrimSuffix(base, filepath.Ext(base)) || !sameValues(e.Vectors, c.want) || e.Vectors.DType != tensor.F32 {
			t.Errorf("%s: name %q vectors %v, want %v", c.file, e.Name, e.Vectors, c.want)
		}
	}

	// The directory: half.safetensors is 2 wide, so width 64 fails naming it.
	if _, err := LoadEmbeddingsDir(dir, 64); err == nil || !strings.Contains(err.Error(), "half.safetensors") ||
		!strings.Contains(err.Error(), "2 wide") {
		t.Errorf("wrong width: err %v, want one naming half.safetensors", err)
	}
	os.Remove(filepath.Join(sub, "half.safetensors"))
	set, err := LoadEmbeddingsDir(dir, 64)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.Names(), ","); got != "concept,pt-style,st-style" {
		t.Errorf("names %s", got)
	}
	// A loaded .pt embedding is used in a prompt.
	e := newEncoder(t)
	e2, err := NewEncoder(e.Tok, e.Text, set)
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := e2.Chunks("photo, pt-style")
	if err != nil {
		t.Fatal(err)
	}
	if f := chunks[0].Fixes; len(f) != 1 || f[0].Embedding.Name != "pt-style" || f[0].Offset != 3 || chunks[0].Tokens[5] != 0 || chunks[0].Tokens[6] != e.Tok.EndID {
		t.Errorf("fixes %+v tokens %v", f, chunks[0].Tokens[:7])
	}
	if _, err := NewEncoder(e.Tok, e.Text, &Embeddings{Width: 768}); err == nil {
		t.Error("encoder accepted 768-wide embeddings for a 64-wide model")
	}
}

func TestLoadEmbeddingErrors(t *testing.T) {
	dir := t.TempDir()
	multi := filepath.Join(dir, "multi.safetensors")
	ckpt.WriteSafetensors(multi, tensor.MapSource{"a": vec(1, 4, 0), "b": vec(1, 4, 1)}, ckpt.WriteOptions{})
	sdxl := filepath.Join(dir, "xl.safetensors")
	ckpt.WriteSafetensors(sdxl, tensor.MapSource{"clip_l": vec(1, 4, 0), "clip_g": vec(1, 8, 1)}, ckpt.WriteOptions{})
	cube := filepath.Join(dir, "cube.safetensors")
	ckpt.WriteSafetensors(cube, tensor.MapSource{"emb_params": tensor.New(1, 2, 3)}, ckpt.WriteOptions{})
	junk := filepath.Join(dir, "junk.pt")
	os.WriteFile(junk, []byte("not a checkpoint"), 0o644)
	for _, c := range []struct{ path, want string }{
		{multi, "not a textual-inversion embedding"},
		{sdxl, "SDXL"},
		{cube, "want [N, C]"},
		{junk, "junk.pt"},
		{filepath.Join(dir, "missing.pt"), "missing.pt"},
	} {
		_, err := LoadEmbedding(c.path)
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), filepath.Base(c.path)) {
			t.Errorf("%s: err %v, want one with %q and the file name", filepath.Base(c.path), err, c.want)
		}
	}
	if _, err := LoadEmbeddingsDir(filepath.Join(dir, "nope"), 64); err == nil {
		t.Error("missing dir accepted")
	}
	long := &Embedding{Name: "long", Vectors: tensor.New(76, 4)}
	if _, err := NewEmbeddings(4, long); err == nil || !strings.Contains(err.Error(), "76 vectors") {
		t.Errorf("76-vector embedding: %v", err)
	}
	a, b := &Embedding{Name: "x", Vectors: tensor.New(1, 4)}, &Embedding{Name: "x", Vectors: tensor.New(1, 4)}
	if _, err := NewEmbeddings(4, a, b); err == nil {
		t.Error("duplicate names accepted")
	}
}
