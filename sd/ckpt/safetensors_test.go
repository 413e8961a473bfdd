package ckpt

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/gosd/gosd/sd/tensor"
)

// rawSafetensors assembles a safetensors file from a header text and data.
func rawSafetensors(header string, data []byte) []byte {
	out := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(out, uint64(len(header)))
	out = append(out, header...)
	return append(out, data...)
}

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func f32bytes(vals ...float32) []byte {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}

func TestSafetensorsRead(t *testing.T) {
	// a: F32 [2,2]; b: F16 [3] (1, -2, 0.5); c: I64 [2]; d: BF16 [1] at an odd offset.
	data := f32bytes(1, 2, 3, 4)
	for _, h := range []uint16{0x3c00, 0xc000, 0x3800} {
		data = binary.LittleEndian.AppendUint16(data, h)
	}
	data = binary.LittleEndian.AppendUint64(data, 7)
	data = binary.LittleEndian.AppendUint64(data, math.MaxUint64) // -1
	data = append(data, 0)                                        // pad to an odd offset
	data = binary.LittleEndian.AppendUint16(data, 0x4040)         // bf16 3.0
	hdr := `{"__metadata__":{"format":"pt","n":3},` +
		`"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},` +
		`"b":{"dtype":"F16","shape":[3],"data_offsets":[16,22]},` +
		`"c":{"dtype":"I64","shape":[2],"data_offsets":[22,38]},` +
		`"d":{"dtype":"BF16","shape":[1],"data_offsets":[39,41]}}`
	p := writeFile(t, "x.safetensors", rawSafetensors(hdr, data))
	s, err := OpenSafetensors(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got := strings.Join(s.Names(), ","); got != "a,b,c,d" {
		t.Fatalf("names %s", got)
	}
	if s.Metadata()["format"] != "pt" || s.Metadata()["n"] != "3" {
		t.Errorf("metadata %v", s.Metadata())
	}
	a, _ := s.Get("a")
	if a.DType != tensor.F32 || !tensor.SameShape(a.Shape, []int{2, 2}) || a.F32[3] != 4 {
		t.Errorf("a = %v %v", a, a.F32)
	}
	b, _ := s.Get("b")
	if b.DType != tensor.F16 || b.Float32s()[1] != -2 || b.Float32s()[2] != 0.5 {
		t.Errorf("b = %v %v", b, b.Float32s())
	}
	c, _ := s.Get("c")
	if c.DType != tensor.F32 || c.F32[0] != 7 || c.F32[1] != -1 {
		t.Errorf("c = %v %v", c, c.F32)
	}
	d, _ := s.Get("d")
	if d.DType != tensor.BF16 || d.Float32s()[0] != 3 {
		t.Errorf("d = %v %v", d, d.Float32s())
	}
	if a2, _ := s.Get("a"); a2 != a {
		t.Error("second Get of the same name built a new tensor")
	}
	if dt, shape, ok := s.Stored("c"); !ok || dt != "I64" || shape[0] != 2 {
		t.Errorf("Stored(c) = %s %v %v", dt, shape, ok)
	}
	if _, ok := s.Get("nope"); ok {
		t.Error("Get of a missing name succeeded")
	}
}

func TestSafetensorsBadInput(t *testing.T) {
	okData := f32bytes(1, 2)
	cases := []struct {
		name string
		file []byte
		want string
	}{
		{"empty", nil, "is empty"},
		{"lfs", []byte("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n"), "Git LFS pointer"},
		{"html", []byte("\n<!DOCTYPE html><html><body>404</body></html>"), "HTML page"},
		{"html2", []byte("<html><head></head></html>"), "HTML page"},
		{"unknown", []byte("GIF89a some image bytes here"), "unknown format"},
		{"json error", []byte(`{"error":"Access to model is restricted. You must be authenticated."}`), "JSON text, not a checkpoint"},
		{"html comment", []byte("<!-- cached -->\n<html><body>Not Found</body></html>"), "HTML page"},
		{"tiny", []byte("abc"), "too short"},
		{"legacy pickle", []byte("\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19."), "legacy (non-zip) PyTorch pickle"},
		{"header absurd", append(binary.LittleEndian.AppendUint64(nil, 1<<40), "{}"...), "absurd"},
		{"header past end", append(binary.LittleEndian.AppendUint64(nil, 500), `{"a":1}`...), "runs past the end"},
		{"not json", rawSafetensors(`{"a": nope}`, nil), "not a JSON object"},
		{"bad dtype", rawSafetensors(`{"a":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}}`, []byte{0, 0}), `"a": unsupported dtype "F8_E4M3"`},
		{"offsets count", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}`, okData), "data_offsets has 1 values"},
		{"offsets reversed", rawSafetensors(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, okData), "not an ordered range"},
		{"offsets past end", rawSafetensors(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, okData), "point past the end"},
		{"size lies", rawSafetensors(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, okData), "needs 12 bytes"},
		{"negative dim", rawSafetensors(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, okData), "bad shape"},
		{"overlap", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, okData), "overlap"},
		{"truncated data", rawSafetensors(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, okData[:5]), "point past the end"},
		{"metadata not object", rawSafetensors(`{"__metadata__":[1,2]}`, nil), "__metadata__"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, "bad.safetensors", c.file)
			s, err := OpenSafetensors(p)
			if err == nil {
				s.Close()
				t.Fatalf("opened a bad file")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("error %q should name the file and contain %q", err, c.want)
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %q is not ErrFormat", err)
			}
		})
	}
}

func TestSafetensorsWriteRoundTrip(t *testing.T) {
	src := &storedMap{MapSource: tensor.MapSource{
		"w32":  tensor.FromF32([]float32{1, -2.5, 3, 4, 5, 6}, 2, 3),
		"w16":  tensor.FromHalf([]uint16{tensor.F32ToF16(0.25), tensor.F32ToF16(-7)}, tensor.F16, 2),
		"wbf":  tensor.FromHalf([]uint16{tensor.F32ToBF16(1.5)}, tensor.BF16, 1, 1),
		"ids":  tensor.FromF32([]float32{0, 1, 2}, 1, 3),
		"zero": tensor.FromF32([]float32{}, 0),
	}, dtypes: map[string]string{"ids": "I64"}}
	p := filepath.Join(t.TempDir(), "rt.safetensors")
	if err := WriteSafetensors(p, src, WriteOptions{Metadata: map[string]string{"k": "v"}}); err != nil {
		t.Fatal(err)
	}
	s, err := OpenSafetensors(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Metadata()["k"] != "v" {
		t.Errorf("metadata %v", s.Metadata())
	}
	hlen := binary.LittleEndian.Uint64(s.data[:8])
	if hlen%8 != 0 {
		t.Errorf("header length %d not padded to 8", hlen)
	}
	for _, n := range src.Names() {
		want, _ := src.Get(n)
		got, ok := s.Get(n)
		if !ok {
			t.Fatalf("%s missing", n)
		}
		if got.DType != want.DType || !tensor.SameShape(got.Shape, want.Shape) {
			t.Errorf("%s: got %v want %v", n, got, want)
			continue
		}
		g, w := got.Float32s(), want.Float32s()
		for i := range w {
			if g[i] != w[i] {
				t.Errorf("%s[%d] = %v want %v", n, i, g[i], w[i])
			}
		}
	}
	if dt, _, _ := s.Stored("ids"); dt != "I64" {
		t.Errorf("ids stored as %s, want I64", dt)
	}
	// Aliasing: weights come straight from the mapping.
	w16, _ := s.Get("w16")
	if len(w16.Half) > 0 && !inMapping(s.data, w16.Half) {
		t.Error("aligned F16 tensor was copied instead of aliasing the mapping")
	}
}

// storedMap is a MapSource that reports chosen stored dtypes.
type storedMap struct {
	tensor.MapSource
	dtypes map[string]string
}

func (m *storedMap) Stored(name string) (string, []int, bool) {
	t, ok := m.MapSource[name]
	if !ok {
		return "", nil, false
	}
	if d, ok := m.dtypes[name]; ok {
		return d, t.Shape, true
	}
	return stDType(t.DType), t.Shape, true
}

func inMapping(data []byte, h []uint16) bool {
	lo := uintptr(unsafe.Pointer(&data[0]))
	p := uintptr(unsafe.Pointer(&h[0]))
	return p >= lo && p < lo+uintptr(len(data))
}

// lyingSource claims tensors it cannot produce.
type lyingSource struct{ n int }

func (l lyingSource) Names() []string {
	out := make([]string, l.n)
	for i := range out {
		out[i] = string(rune('a'+i%26)) + strings.Repeat("x", i/26)
	}
	return out
}
func (l lyingSource) Get(string) (*tensor.Tensor, bool)   { return nil, false }
func (l lyingSource) Stored(string) (string, []int, bool) { return "F32", []int{4}, true }

func TestWriteSourceFailure(t *testing.T) {
	dir := t.TempDir()
	for _, write := range []func(string) error{
		func(p string) error { return WriteSafetensors(p, lyingSource{100}, WriteOptions{}) },
		func(p string) error { return WriteTorchZip(p, lyingSource{100}, WriteOptions{}, false) },
	} {
		p := filepath.Join(dir, "out")
		if err := write(p); err == nil || !strings.Contains(err.Error(), "vanished") {
			t.Errorf("error %v", err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("left files behind: %v", ents)
		}
	}
}

func TestSafetensorsHeaderWhitespace(t *testing.T) {
	p := writeFile(t, "ws.safetensors", rawSafetensors("\n  {\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}   ", f32bytes(2.5)))
	s, err := OpenSafetensors(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if a, ok := s.Get("a"); !ok || a.F32[0] != 2.5 {
		t.Errorf("a = %v", a)
	}
}
