package cpu

import (
	"errors"
	"testing"
)

// The wrappers refuse slices shorter than the sizes passed, and kernel
// failures come back as *Error with the kernel's status and message.
func TestErrors(t *testing.T) {
	cases := []struct {
		name   string
		err    error
		status int
	}{
		{"short y", Linear(make([]float32, 5), make([]float32, 6), Weight{F32: make([]float32, 6)}, Weight{}, 2, 3, 3), StatusArg},
		{"short half weight", Linear(make([]float32, 4), make([]float32, 4), Weight{Half: make([]uint16, 3), DType: F16}, Weight{}, 2, 2, 2), StatusArg},
		{"bad dtype", Linear(make([]float32, 4), make([]float32, 4), Weight{Half: make([]uint16, 4), DType: 7}, Weight{}, 2, 2, 2), StatusDType},
		{"stride 0", Conv2D(make([]float32, 4), make([]float32, 4), Weight{F32: make([]float32, 1)}, Weight{}, 1, 1, 2, 2, 1, 1, 1, 0, 0, 0, 2, 2), StatusArg},
		{"unknown op", Unary(make([]float32, 2), make([]float32, 2), 99), StatusArg},
		{"causal lq != lk", Attention(make([]float32, 4), make([]float32, 4), make([]float32, 8), make([]float32, 8), 1, 2, 4, 1, 2, true), StatusArg},
	}
	for _, c := range cases {
		var e *Error
		if !errors.As(c.err, &e) || e.Status != c.status || e.Msg == "" {
			t.Errorf("%s: err = %v, want status %d with a message", c.name, c.err, c.status)
		}
	}
	if err := SetISA(5); err == nil {
		t.Error("SetISA(5) succeeded")
	}
}

func TestProbe(t *testing.T) {
	ghz, gf, err := Probe(0.02)
	if err != nil || ghz <= 0.1 || (HasAVX512() && gf <= 0) {
		t.Fatalf("Probe = %v GHz, %v GFLOP/s, %v", ghz, gf, err)
	}
}
