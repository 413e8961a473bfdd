package cpu

import (
	"errors"
	"os"
	"strings"
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

// The CPU features reported match /proc/cpuinfo's flags: AMX is never
// claimed without amx_tile and amx_bf16, and bf16 is active only when
// selected on a CPU with avx512_bf16.
func TestFeaturesAndPrecision(t *testing.T) {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skip(err)
	}
	flags := map[string]bool{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "flags" {
			for _, f := range strings.Fields(v) {
				flags[f] = true
			}
			break
		}
	}
	if HasAMX() && !(flags["amx_tile"] && flags["amx_bf16"]) {
		t.Fatal("HasAMX without amx_tile/amx_bf16 in /proc/cpuinfo")
	}
	if HasBF16() != (flags["avx512_bf16"] && HasAVX512()) {
		t.Fatalf("HasBF16 = %v, cpuinfo avx512_bf16 = %v", HasBF16(), flags["avx512_bf16"])
	}
	defer SetPrecision(PrecF32)
	if err := SetPrecision(PrecBF16); err != nil {
		t.Fatal(err)
	}
	if Precision() != PrecBF16 || BF16Active() != (HasBF16() && ISA() == ISAAVX512) {
		t.Fatalf("bf16 selected: precision %d, active %v", Precision(), BF16Active())
	}
	if err := SetPrecision(PrecF32); err != nil || BF16Active() {
		t.Fatalf("f32 selected: err %v, bf16 active %v", err, BF16Active())
	}
	if err := SetPrecision(7); err == nil {
		t.Fatal("precision 7 accepted")
	}
}
