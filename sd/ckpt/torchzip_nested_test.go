package ckpt

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"testing"
)

// a1111EmbeddingPickle is the pickle torch.save writes for AUTOMATIC1111's
// textual-inversion files: {"string_to_token": {"*": 265},
// "string_to_param": {"*": <f32 tensor [n, c]>}, "name": name, "step": 10}.
func a1111EmbeddingPickle(name string, n, c int) []byte {
	var b bytes.Buffer
	str := func(s string) {
		b.WriteByte('X')
		binary.Write(&b, binary.LittleEndian, uint32(len(s)))
		b.WriteString(s)
	}
	num := func(v int) {
		b.WriteByte('J')
		binary.Write(&b, binary.LittleEndian, int32(v))
	}
	b.Write([]byte{0x80, 2, '}', '('})
	str("string_to_token")
	b.WriteByte('}')
	str("*")
	num(265)
	b.WriteByte('s')
	str("string_to_param")
	b.WriteByte('}')
	str("*")
	b.WriteString("ctorch._utils\n_rebuild_tensor_v2\n(")
	b.WriteByte('(')
	str("storage")
	b.WriteString("ctorch\nFloatStorage\n")
	str("0")
	str("cpu")
	num(n * c)
	b.Write([]byte{'t', 'Q'})
	num(0)
	b.WriteByte('(')
	num(n)
	num(c)
	b.Write([]byte{'t', '('})
	num(c)
	num(1)
	b.Write([]byte{'t', 0x88})
	b.WriteString("ccollections\nOrderedDict\n)R")
	b.Write([]byte{'t', 'R', 's'})
	str("name")
	str(name)
	str("step")
	num(10)
	b.Write([]byte{'u', '.'})
	return b.Bytes()
}

// TestTorchZipNestedDict reads a tensor kept in a nested dict (A1111
// textual-inversion layout) under its dotted key path.
func TestTorchZipNestedDict(t *testing.T) {
	const n, c = 2, 3
	var data bytes.Buffer
	for i := 0; i < n*c; i++ {
		binary.Write(&data, binary.LittleEndian, math.Float32bits(float32(i)+0.5))
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range []struct {
		name string
		b    []byte
	}{{"emb/data.pkl", a1111EmbeddingPickle("emb", n, c)}, {"emb/data/0", data.Bytes()}, {"emb/version", []byte("3\n")}} {
		w, err := zw.Create(e.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(e.b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "emb.pt")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
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
