package prompt

import (
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/clip"
	"github.com/gosd/gosd/sd/internal/npy"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// TestGoldenSD15 encodes the golden prompts through the Encoder on the
// full-size random SD 1.5 checkpoint and compares with cond.npy and
// uncond.npy (PyTorch, float32); emphasis syntax of weight 1, "(fox:1)",
// must not change anything.
func TestGoldenSD15(t *testing.T) {
	if testing.Short() {
		t.Skip("full-size checkpoint test skipped in -short mode")
	}
	golden := testckpt.GoldenDir(t)
	b, err := os.ReadFile(filepath.Join(golden, "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var meta struct{ Prompt, Negative string }
	if err := json.Unmarshal(b, &meta); err != nil {
		t.Fatal(err)
	}
	c, err := ckpt.Open(testckpt.SD15(t), ckpt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m, err := clip.Load(c, clip.Prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEncoder(sd15Tokenizer(t), m, nil)
	if err != nil {
		t.Fatal(err)
	}
	be := tensor.NewCPU()
	start := time.Now()
	z, refs, err := e.EncodeCFG(be, meta.Prompt, meta.Negative, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: EncodeCFG in %v", be.Name(), time.Since(start).Round(time.Millisecond))
	if len(refs) != 0 || !tensor.SameShape(z.Shape, []int{2, 77, 768}) {
		t.Fatalf("shape %v, refs %v", z.Shape, refs)
	}
	const n = 77 * 768
	for i, f := range []string{"uncond.npy", "cond.npy"} {
		want, _, err := npy.Read(filepath.Join(golden, f))
		if err != nil {
			t.Fatal(err)
		}
		var d, mx float64
		for j, w := range want {
			d = math.Max(d, math.Abs(float64(z.F32[i*n+j])-float64(w)))
			mx = math.Max(mx, math.Abs(float64(w)))
		}
		// The clip package measures 4.9e-6 for the same model (float32 sums).
		t.Logf("%s: max abs diff %.2e (max |want| %.2f)", f, d, mx)
		if d > 5e-5 {
			t.Errorf("%s: max abs diff %.2e", f, d)
		}
	}
	same, _, err := e.Encode(be, "a watercolor painting of a (fox:1) in a snowy forest", 1)
	if err != nil {
		t.Fatal(err)
	}
	for j := 0; j < n; j++ {
		if same.F32[j] != z.F32[n+j] {
			t.Fatalf("weight-1 emphasis changed element %d", j)
		}
	}
}
