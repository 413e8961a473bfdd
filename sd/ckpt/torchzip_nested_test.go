package ckpt

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/gosd/gosd/sd/internal/pttest"
)

// TestTorchZipNestedDict reads a tensor kept in a nested dict (A1111
// textual-inversion layout) under its dotted key path.
func TestTorchZipNestedDict(t *testing.T) {
	const n, c = 2, 3
	v := make([]float32, n*c)
	for i := range v {
		v[i] = float32(i) + 0.5
	}
	b, err := pttest.A1111Embedding("emb", "emb", v, n, c)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "emb.pt")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	z, err := OpenTorchZip(path)
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	if got := z.Names(); len(got) != 1 || got[0] != "string_to_param.*" {
		t.Fatalf("names %q, want [string_to_param.*]", got)
	}
	ten, ok := z.Get("string_to_param.*")
	if !ok || len(ten.Shape) != 2 || ten.Shape[0] != n || ten.Shape[1] != c {
		t.Fatalf("tensor %v", ten)
	}
	for i, v := range ten.Float32s() {
		if v != float32(i)+0.5 {
			t.Fatalf("element %d = %v, want %v", i, v, float32(i)+0.5)
		}
	}
	if z.Extra()["name"] != "emb" {
		t.Errorf("extra %v", z.Extra())
	}
}
