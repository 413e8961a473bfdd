package clip

import (
	"math"
	"testing"
	"time"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/npy"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// TestGoldenSD15 runs the text model of the full-size random SD 1.5
// checkpoint on the golden prompts' tokens and compares with cond.npy and
// uncond.npy, computed in float32 by an independent PyTorch implementation.
// Measured: max abs error 4.9e-6, relative to max |want| 1.2e-6, relative RMS
// 9.5e-7 on cpu/avx512 (0.9 s); 4.3e-6, 1.1e-6, 7.9e-7 on the ref backend (20 s).
func TestGoldenSD15(t *testing.T) {
	if testing.Short() {
		t.Skip("full-size checkpoint test skipped in -short mode")
	}
	path := testckpt.SD15(t)
	st, err := ckpt.Open(path, ckpt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	m, err := Load(st, Prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Config != SD15Config() {
		t.Fatalf("inferred config %+v, want %+v", m.Config, SD15Config())
	}
	// Prompt to embedding through the tokenizer (its ids equal meta.json's,
	// see TestTokenizerGoldenPrompts).
	meta := readGoldenMeta(t)
	tok := sd15Tokenizer(t)
	cond, _ := tok.Pad77(tok.Encode(meta.Prompt))
	uncond, _ := tok.Pad77(tok.Encode(meta.Negative))
	be := testckpt.GoldenBackend()
	start := time.Now()
	y, err := m.Encode(be, [][]int{cond, uncond}, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s backend: 2 prompts in %v", be.Name(), time.Since(start).Round(time.Millisecond))
	const n = ContextLength * 768
	for i, f := range []string{"cond.npy", "uncond.npy"} {
		want, shape, err := npy.Read(sharedPath(t, "golden", "sd15-dev-fox", f))
		if err != nil {
			t.Fatal(err)
		}
		if !tensor.SameShape(shape, []int{ContextLength, 768}) {
			t.Fatalf("%s has shape %v", f, shape)
		}
		got := y.F32[i*n : (i+1)*n]
		checkClose(t, f, got, want)
	}

	// Clip skip 2 against testdata/clip/cond_clipskip2_rows16.npy, the first
	// 16 rows written by testdata/clip/clipskip_golden.py (PyTorch).
	want, shape, err := npy.Read(repoRoot(t) + "/testdata/clip/cond_clipskip2_rows16.npy")
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(shape, []int{16, 768}) {
		t.Fatalf("cond_clipskip2_rows16.npy has shape %v", shape)
	}
	y2, err := m.Encode(be, [][]int{cond}, 2)
	if err != nil {
		t.Fatal(err)
	}
	checkClose(t, "clip skip 2", y2.F32[:16*768], want)
	var skipDiff float64
	for j := range want {
		skipDiff = math.Max(skipDiff, math.Abs(float64(y2.F32[j]-y.F32[j])))
	}
	if skipDiff < 0.1 {
		t.Errorf("clip skip 2 differs from clip skip 1 by only %.3g", skipDiff)
	}
}

// checkClose compares float32 results: different summation orders give
// relative errors near 1e-6; anything above 1e-4 is a bug.
func checkClose(t *testing.T, what string, got, want []float32) {
	t.Helper()
	var maxAbs, maxWant, se, sw float64
	for j, w := range want {
		d := math.Abs(float64(got[j]) - float64(w))
		maxAbs = math.Max(maxAbs, d)
		maxWant = math.Max(maxWant, math.Abs(float64(w)))
		se += d * d
		sw += float64(w) * float64(w)
	}
	rel, rms := maxAbs/maxWant, math.Sqrt(se/sw)
	t.Logf("%s: max abs err %.3g, max abs err / max |want| %.3g, relative RMS err %.3g", what, maxAbs, rel, rms)
	if rel > 1e-4 || rms > 1e-4 || maxWant < 1 {
		t.Errorf("%s: relative error %.3g (RMS %.3g, max |want| %.3g)", what, rel, rms, maxWant)
	}
}
