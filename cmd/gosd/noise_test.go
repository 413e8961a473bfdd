package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// noiseValues runs `gosd noise` with args and parses its output.
func noiseValues(t *testing.T, args ...string) []float32 {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := runNoise(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("gosd noise %v: %v (%s)", args, err, errOut.String())
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	vals := make([]float32, len(lines))
	for i, l := range lines {
		v, err := strconv.ParseFloat(l, 32)
		if err != nil {
			t.Fatalf("line %d %q: %v", i+1, l, err)
		}
		vals[i] = float32(v)
	}
	return vals
}

// TestNoiseCPU: torch.manual_seed(0); torch.randn(8) on the CPU is 1.5410,
// -0.2934, -2.1788, 0.5684, -1.0845, -1.3986, 0.4033, 0.8380 (PyTorch's
// documentation and every PyTorch session); bit for bit, the values of
// sd/rng/testdata (written by PyTorch 1.13, see its README).
func TestNoiseCPU(t *testing.T) {
	got := noiseValues(t, "--rng", "cpu", "--seed", "0", "--count", "8")
	want := []float64{1.5410, -0.2934, -2.1788, 0.5684, -1.0845, -1.3986, 0.4033, 0.8380}
	if len(got) != len(want) {
		t.Fatalf("%d values, want %d", len(got), len(want))
	}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]) > 5e-5 {
			t.Errorf("value %d = %v, want %.4f", i, got[i], want[i])
		}
	}
	for _, n := range []int{8, 17, 100} {
		ref, _, err := readF32NPY(filepath.Join("..", "..", "sd", "rng", "testdata", "cpu_avx2_seed0_"+strconv.Itoa(n)+".npy"))
		if err != nil {
			t.Fatal(err)
		}
		got := noiseValues(t, "--rng", "cpu", "--seed", "0", "--count", strconv.Itoa(n))
		for i := range ref {
			if math.Float32bits(got[i]) != math.Float32bits(ref[i]) {
				t.Fatalf("count %d: value %d = %v, PyTorch %v", n, i, got[i], ref[i])
			}
		}
	}
	// The CPU generator's draws are not prefixes of longer ones below 16
	// values (a float64 path) ...
	a8, a16, a32 := noiseValues(t, "--rng", "cpu", "--count", "8"), noiseValues(t, "--rng", "cpu", "--count", "16"),
		noiseValues(t, "--rng", "cpu", "--count", "32")
	if a8[0] == a16[0] {
		t.Error("cpu: 8 values are a prefix of 16, expected PyTorch's separate small-count path")
	}
	// ... but multiples of 16 are.
	for i := range a16 {
		if a16[i] != a32[i] {
			t.Fatalf("cpu: 16 values not a prefix of 32 at %d", i)
		}
	}
}

// goldenNoise are the first values of ../shared/golden/sd15-dev-fox/noise.npy:
// torch.randn([4, 24, 32]) on a CUDA device after torch.manual_seed(2024).
var goldenNoise = []float32{0.997857571, -1.14492154, 0.6295681, 0.775509238, -1.97198319, 0.509062052, 0.767029941, 1.31143022}

// TestNoiseCUDA: seed 2024 reproduces the golden run's 3072-value draw bit
// for bit, and for the Philox generator a shorter or longer draw gives the
// same prefix (each value has its own subsequence), so --count 8 prints the
// file's first 8 values.
func TestNoiseCUDA(t *testing.T) {
	got8 := noiseValues(t, "--seed", "2024", "--count", "8") // --rng cuda is the default
	for i, w := range goldenNoise {
		if math.Float32bits(got8[i]) != math.Float32bits(w) {
			t.Errorf("value %d = %.9g, want %.9g", i, got8[i], w)
		}
	}
	got := noiseValues(t, "--rng", "cuda", "--seed", "2024", "--count", "5000")
	for _, n := range []int{1, 100, 3072} {
		short := noiseValues(t, "--rng", "CUDA", "--seed", "2024", "--count", strconv.Itoa(n))
		for i := range short {
			if short[i] != got[i] {
				t.Fatalf("count %d: value %d = %v, count 5000 gives %v", n, i, short[i], got[i])
			}
		}
	}
	ref, _, err := readF32NPY(filepath.Join("..", "..", "..", "shared", "golden", "sd15-dev-fox", "noise.npy"))
	if err != nil {
		t.Skip("golden data not present:", err)
	}
	if len(ref) != 3072 {
		t.Fatalf("noise.npy has %d values", len(ref))
	}
	for i := range ref {
		if math.Float32bits(got[i]) != math.Float32bits(ref[i]) {
			t.Fatalf("value %d = %.9g, noise.npy %.9g", i, got[i], ref[i])
		}
	}
}

// TestNoiseCUDAThreads: with fewer resident threads than values the layout
// loops (rng.NewPhiloxThreads): values below the thread count are unchanged,
// the next ones differ.
func TestNoiseCUDAThreads(t *testing.T) {
	full := noiseValues(t, "--seed", "7", "--count", "1024")
	lim := noiseValues(t, "--seed", "7", "--count", "1024", "--cuda-threads", "256")
	for i := 0; i < 256; i++ {
		if full[i] != lim[i] {
			t.Fatalf("value %d differs with 256 threads", i)
		}
	}
	if full[256] == lim[256] && full[300] == lim[300] {
		t.Error("256 threads give the one-thread-per-value layout")
	}
}

func TestNoiseErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--rng", "mps"}, "cuda, cpu"},
		{[]string{"--count", "0"}, "--count 0"},
		{[]string{"--count", "-3"}, "--count -3"},
		{[]string{"--count", "100000000"}, "--count 100000000"},
		{[]string{"--seed", "-1"}, "seed"},
		{[]string{"--seed", "1", "extra"}, `"extra"`},
		{[]string{"--rng", "cpu", "--cuda-threads", "256"}, "--rng cuda"},
		{[]string{"--cuda-threads", "-1"}, "--cuda-threads"},
	} {
		var out, errOut bytes.Buffer
		err := runNoise(context.Background(), c.args, &out, &errOut)
		if err == nil || !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want a usage error mentioning %q", c.args, err, c.want)
		}
		if out.Len() != 0 {
			t.Errorf("%v: printed %q", c.args, out.String())
		}
	}
	var out, help bytes.Buffer
	if err := runNoise(context.Background(), []string{"-h"}, &out, &help); !errors.Is(err, flag.ErrHelp) ||
		!strings.Contains(help.String(), "-count") {
		t.Errorf("-h: %v, help %q", err, help.String())
	}
}

// readF32NPY reads a little-endian float32 C-order .npy file (cmd/gosd may
// not import sd/internal/npy); it returns the values and the shape text.
func readF32NPY(path string) ([]float32, string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, "", err
	}
	if len(b) < 10 || string(b[:6]) != "\x93NUMPY" {
		return nil, "", fmt.Errorf("%s: not a .npy file", path)
	}
	var hlen, off int
	switch b[6] {
	case 1:
		hlen, off = int(binary.LittleEndian.Uint16(b[8:])), 10
	default:
		hlen, off = int(binary.LittleEndian.Uint32(b[8:])), 12
	}
	if off+hlen > len(b) {
		return nil, "", fmt.Errorf("%s: short header", path)
	}
	h := string(b[off : off+hlen])
	if !strings.Contains(h, "'<f4'") || !strings.Contains(h, "'fortran_order': False") {
		return nil, "", fmt.Errorf("%s: header %q, want little-endian float32 in C order", path, h)
	}
	data := b[off+hlen:]
	v := make([]float32, len(data)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return v, h, nil
}
