package clip

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/internal/npy"
	"github.com/gosd/gosd/sd/tensor"
)

// TestOpenCLIPBlockTorch runs one OpenCLIP residual block against PyTorch
// (testdata/gen_openclip_block.py: nn.MultiheadAttention with the fused
// in_proj and a causal mask, exact GELU, computed in float64 from the saved
// float32 weights): 64 wide, 2 heads, MLP 256, batch 2, 6 tokens.
func TestOpenCLIPBlockTorch(t *testing.T) {
	dir := filepath.Join("testdata", "openclip_block")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	src := tensor.MapSource{}
	read := func(name string) *tensor.Tensor {
		data, shape, err := npy.Read(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return tensor.FromF32(data, shape...)
	}
	for _, e := range entries {
		n := e.Name()
		if n == "x.npy" || n == "y.npy" {
			continue
		}
		src["transformer.resblocks.0."+strings.TrimSuffix(n, ".npy")] = read(n)
	}
	const C = 64
	src["token_embedding.weight"] = tensor.New(10, C)
	src["positional_embedding"] = tensor.New(6, C)
	src["ln_final.weight"], src["ln_final.bias"] = tensor.New(C), tensor.New(C)
	cfg := Config{Hidden: C, Layers: 1, Heads: 2, FF: 256, Vocab: 10, MaxPos: 6, Act: tensor.GELU, Eps: 1e-5}
	m, err := LoadOpenCLIP(src, "", &cfg, 0)
	if err != nil {
		t.Fatal(err)
	}
	x, want := read("x.npy"), read("y.npy")
	for _, be := range []tensor.Backend{tensor.NewRef(), tensor.NewCPU()} {
		var got *tensor.Tensor
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("%s: %v", be.Name(), r)
				}
			}()
			got = m.Layers[0].forward(be, x.Clone(), m.Config)
		}()
		var worst float64
		for i, w := range want.F32 {
			worst = math.Max(worst, math.Abs(float64(got.F32[i]-w))/(1+math.Abs(float64(w))))
		}
		t.Logf("%s: worst relative error %.3g", be.Name(), worst)
		if worst > 2e-5 {
			t.Errorf("%s: worst relative error %.3g vs PyTorch", be.Name(), worst)
		}
	}
}
