package sd

import (
	"math"
	"testing"

	"github.com/gosd/gosd/sd/prompt"
	"github.com/gosd/gosd/sd/tensor"
)

func TestDenoisedFormulas(t *testing.T) {
	// sigma = 2: c_skip = 1/5, c_out = -2/sqrt(5) = -0.894427191.
	// v: 0.2*1.5 - 0.894427191*0.4 = 0.3 - 0.3577708764 = -0.0577708764.
	if got := denoised(PredictionV, 1.5, 0.4, 2); math.Abs(float64(got)-(-0.0577708764)) > 1e-7 {
		t.Errorf("v: got %.10f, want -0.0577708764", got)
	}
	// eps: 1.5 - 2*0.4 = 0.7.
	if got := denoised(PredictionEps, 1.5, 0.4, 2); math.Abs(float64(got)-0.7) > 1e-7 {
		t.Errorf("eps: got %.10f, want 0.7", got)
	}
	// sigma = 0 leaves x unchanged for both.
	for _, p := range []string{PredictionEps, PredictionV} {
		if got := denoised(p, 0.25, 3, 0); got != 0.25 {
			t.Errorf("%s at sigma 0: %v", p, got)
		}
	}
}

func TestPadZero(t *testing.T) {
	c := prompt.Chunk{Tokens: []int{49406, 320, 49407, 49407, 49407}}
	got := padZero(c, 49407)
	want := []int{49406, 320, 49407, 0, 0}
	for i := range want {
		if got.Tokens[i] != want[i] {
			t.Fatalf("got %v, want %v", got.Tokens, want)
		}
	}
	if c.Tokens[3] != 49407 {
		t.Fatal("padZero modified its input")
	}
}

func TestSDXLVector(t *testing.T) {
	pooled := tensor.FromF32([]float32{1, 2, 3, 4}, 2, 2)
	const dim = 4 // half = 2: frequencies 1 and exp(-ln(10000)/2) = 0.01
	y := sdxlVector(pooled, 768, 1024, dim)
	if len(y.Shape) != 2 || y.Shape[0] != 2 || y.Shape[1] != 2+6*dim {
		t.Fatalf("shape %v", y.Shape)
	}
	row := y.F32[26:] // second batch row
	if row[0] != 3 || row[1] != 4 {
		t.Fatalf("pooled part %v", row[:2])
	}
	// Numbers in order: height 768, width 1024, crop 0, 0, height, width;
	// each [cos(n f0), cos(n f1), sin(n f0), sin(n f1)].
	nums := []float64{768, 1024, 0, 0, 768, 1024}
	for k, n := range nums {
		want := []float64{math.Cos(n), math.Cos(n * 0.01), math.Sin(n), math.Sin(n * 0.01)}
		for j, w := range want {
			if got := float64(row[2+k*dim+j]); math.Abs(got-w) > 2e-4 {
				t.Errorf("number %d feature %d: got %v, want %v", k, j, got, w)
			}
		}
	}
}
