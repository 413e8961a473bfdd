package nn

import (
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

func TestLoaderChecksShapes(t *testing.T) {
	src := tensor.MapSource{
		"m.fc.weight":   tensor.New(3, 2),
		"m.fc.bias":     tensor.New(3),
		"m.conv.weight": tensor.New(4, 3, 3, 3),
		"m.extra":       tensor.New(1),
	}
	l := NewLoader(src, "m.")
	fc := l.Linear("fc", 2, 3, true)
	if l.Err() != nil {
		t.Fatal(l.Err())
	}
	if fc.Out() != 3 {
		t.Fatalf("Out() = %d", fc.Out())
	}
	if got := l.Unused("m."); len(got) != 2 || got[0] != "m.conv.weight" || got[1] != "m.extra" {
		t.Fatalf("Unused = %v", got)
	}
	if l.Optional("missing") != nil || l.Err() != nil {
		t.Fatal("Optional of an absent tensor must be nil without error")
	}

	// A wrong shape is an error naming the tensor and both shapes; the
	// placeholder keeps the wanted shape so building can go on.
	p := l.Sub("conv").Tensor("weight", 4, 5, 3, 3)
	if l.Err() == nil || !strings.Contains(l.Err().Error(), `"m.conv.weight" has shape [4 3 3 3], want [4 5 3 3]`) {
		t.Fatalf("err = %v", l.Err())
	}
	if !tensor.SameShape(p.Shape, []int{4, 5, 3, 3}) {
		t.Fatalf("placeholder shape %v", p.Shape)
	}

	// Only the first error is kept.
	l.Tensor("nope", 1)
	if !strings.Contains(l.Err().Error(), "m.conv.weight") {
		t.Fatalf("first error replaced: %v", l.Err())
	}

	l2 := NewLoader(src, "m.")
	l2.Tensor("nope", 1)
	if l2.Err() == nil || !strings.Contains(l2.Err().Error(), `no tensor "m.nope"`) {
		t.Fatalf("missing tensor: %v", l2.Err())
	}
}

func TestLayersForward(t *testing.T) {
	be := tensor.NewRef()
	// y = x·Wᵀ + b with W = [[1 2] [3 4] [5 6]], b = [1 1 1].
	w := tensor.FromF32([]float32{1, 2, 3, 4, 5, 6}, 3, 2)
	b := tensor.FromF32([]float32{1, 1, 1}, 3)
	x := tensor.FromF32([]float32{1, -1, 2, 0.5}, 2, 2)
	y := (&Linear{Weight: w, Bias: b}).Forward(be, x)
	want := []float32{0, 0, 0, 4, 9, 14}
	for i, v := range want {
		if y.F32[i] != v {
			t.Fatalf("linear: got %v, want %v", y.F32, want)
		}
	}
	// A 3x3 conv with symmetric padding keeps the size; a 1-channel
	// all-ones kernel sums each neighbourhood.
	c := &Conv2D{Weight: tensor.FromF32([]float32{1, 1, 1, 1, 1, 1, 1, 1, 1}, 1, 1, 3, 3), Params: tensor.Pad(1, 1)}
	img := tensor.FromF32([]float32{1, 2, 3, 4}, 1, 1, 2, 2)
	out := c.Forward(be, img)
	for i, v := range []float32{10, 10, 10, 10} {
		if out.F32[i] != v {
			t.Fatalf("conv: got %v", out.F32)
		}
	}
	if u := Upsample2x(be, img); !tensor.SameShape(u.Shape, []int{1, 1, 4, 4}) || u.F32[5] != 1 || u.F32[15] != 4 {
		t.Fatalf("upsample: %v %v", u.Shape, u.F32)
	}
	if g := GEGLU(be, tensor.FromF32([]float32{2, 0}, 1, 2)); g.F32[0] != 0 {
		t.Fatalf("geglu: %v", g.F32)
	}
}

func TestMustRecover(t *testing.T) {
	f := func() (err error) {
		defer tensor.Recover(&err)
		be := tensor.NewRef()
		// Mismatched linear: the backend reports a shape error, Must panics,
		// Recover returns it.
		(&Linear{Weight: tensor.New(3, 5)}).Forward(be, tensor.New(2, 4))
		return nil
	}
	if err := f(); err == nil || !strings.Contains(err.Error(), "linear") {
		t.Fatalf("err = %v", err)
	}
}

func TestWeightsFindsEveryTensorOnce(t *testing.T) {
	shared := tensor.New(2)
	type block struct {
		L    *Linear
		list []*Conv2D
		m    map[string]*tensor.Tensor
	}
	type model struct {
		A, B  *block
		Again *tensor.Tensor
		Iface any
		arr   [2]*GroupNorm
		Sizes []int
	}
	m := &model{
		A:     &block{L: &Linear{Weight: tensor.New(3, 2), Bias: shared}, list: []*Conv2D{{Weight: tensor.New(1, 1, 1, 1)}}},
		B:     &block{m: map[string]*tensor.Tensor{"x": tensor.New(5)}},
		Again: shared,
		Iface: &LayerNorm{Weight: tensor.New(4), Bias: tensor.New(4)},
		arr:   [2]*GroupNorm{{Weight: tensor.New(6), Bias: tensor.New(6)}},
		Sizes: []int{1, 2},
	}
	ws := Weights(m)
	if len(ws) != 8 {
		t.Fatalf("found %d tensors, want 8 (the shared one once)", len(ws))
	}
	seen := map[*tensor.Tensor]bool{}
	for _, w := range ws {
		if seen[w] {
			t.Fatalf("tensor %v listed twice", w.Shape)
		}
		seen[w] = true
	}
	if !seen[shared] || !seen[m.B.m["x"]] || !seen[m.arr[0].Bias] {
		t.Fatal("a tensor behind a pointer, map or array was missed")
	}
}
