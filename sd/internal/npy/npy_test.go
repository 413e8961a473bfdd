package npy

import (
	"bytes"
	"testing"
)

func TestRoundTripAndGolden(t *testing.T) {
	var buf bytes.Buffer
	in := []float32{1, -2.5, 3e-8, 4, 5, 6}
	if err := Write(&buf, in, []int{2, 3}); err != nil {
		t.Fatal(err)
	}
	out, shape, err := Decode(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if len(shape) != 2 || shape[0] != 2 || shape[1] != 3 {
		t.Fatalf("shape %v", shape)
	}
	for i := range in {
		if in[i] != out[i] {
			t.Fatalf("value %d: %v != %v", i, out[i], in[i])
		}
	}
	if _, _, err := Decode(buf.Bytes()[:buf.Len()-1]); err == nil {
		t.Fatal("truncated file accepted")
	}
	s, shape, err := Read("../../../../shared/golden/sd15-dev-fox/sigmas.npy")
	if err != nil {
		t.Skip("golden data not present:", err)
	}
	if len(shape) != 1 || shape[0] != 4 || s[0] < 14.6 || s[0] > 14.62 || s[3] != 0 {
		t.Fatalf("sigmas %v shape %v", s, shape)
	}
}
