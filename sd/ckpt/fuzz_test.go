package ckpt

import (
	"archive/zip"
	"bytes"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

// FuzzSafetensorsHeader checks that no header text makes the validator panic
// and that accepted headers describe ranges inside the data section.
func FuzzSafetensorsHeader(f *testing.F) {
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`), int64(8))
	f.Add([]byte(`{"__metadata__":{"k":"v"},"b":{"dtype":"F16","shape":[1,3],"data_offsets":[2,8]}}`), int64(8))
	f.Add([]byte(`{"a":{"dtype":"I64","shape":[],"data_offsets":[0,8]},"b":{"dtype":"BOOL","shape":[0],"data_offsets":[8,8]}}`), int64(16))
	f.Add([]byte(`{"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}}`), int64(0))
	f.Fuzz(func(t *testing.T, header []byte, dataLen int64) {
		if dataLen < 0 {
			dataLen = -dataLen
		}
		entries, _, err := parseSTHeader("fuzz", header, dataLen)
		if err != nil {
			return
		}
		for _, e := range entries {
			if e.begin < 0 || e.end < e.begin || e.end > dataLen {
				t.Fatalf("accepted %s [%d, %d] for %d data bytes", e.name, e.begin, e.end, dataLen)
			}
			n := int64(1)
			for _, d := range e.shape {
				n *= int64(d)
			}
			if n*stItemSize[e.dtype] != e.end-e.begin {
				t.Fatalf("accepted %s with shape %v and %d bytes", e.name, e.shape, e.end-e.begin)
			}
		}
	})
}

// FuzzUnpickle checks that no pickle makes the unpickler panic, hang or
// resolve a global outside the allow-list.
func FuzzUnpickle(f *testing.F) {
	f.Add(tensorDictPickle([]plannedTensor{{name: "w", dtype: "F16", shape: []int{2, 3}}, {name: "i", dtype: "I64", shape: []int{4}}}, true))
	f.Add(evilPickle("os", "system", false))
	f.Add(evilPickle("builtins", "eval", true))
	f.Add([]byte("\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01X\x01\x00\x00\x00bq\x02]q\x03(G?\xf0\x00\x00\x00\x00\x00\x00\x88\x89Ne\x8a\x02\xff\x7fu."))
	f.Add([]byte("(dp0\nS'a'\np1\nI01\nsS'b'\nF1.5\ns."))
	f.Fuzz(func(t *testing.T, data []byte) {
		persist := func(pid any) (any, error) {
			return &storageRef{dtype: "F32", key: "0", numel: 16}, nil
		}
		v, err := unpickle(data, persist)
		if err != nil {
			return
		}
		if g, ok := v.(pyGlobal); ok && !allowedGlobal(g.module, g.name) {
			t.Fatalf("resolved a forbidden global %v", g)
		}
	})
}

func TestUnpickleValues(t *testing.T) {
	// {'a': 1, 'b': [1.0, True, False, None], 'n': -32769 (LONG1), 'big': 2**70 (LONG1)}
	data := []byte("\x80\x02}q\x00(X\x01\x00\x00\x00aK\x01X\x01\x00\x00\x00b]q\x01(G?\xf0\x00\x00\x00\x00\x00\x00\x88\x89NeX\x01\x00\x00\x00n\x8a\x03\xff\x7f\xffX\x03\x00\x00\x00big\x8a\x09\x00\x00\x00\x00\x00\x00\x00\x00\x40u.")
	v, err := unpickle(data, nil)
	if err != nil {
		t.Fatal(err)
	}
	d := v.(*pyDict)
	if a, _ := d.get("a"); a != int64(1) {
		t.Errorf("a = %v", a)
	}
	b, _ := d.get("b")
	l := b.(*pyList).items
	if len(l) != 4 || l[0] != 1.0 || l[1] != true || l[2] != false || l[3] != nil {
		t.Errorf("b = %v", l)
	}
	if n, _ := d.get("n"); n != int64(-32769) {
		t.Errorf("n = %v", n)
	}
	if big, _ := d.get("big"); pyString(big) != "1180591620717411303424" {
		t.Errorf("big = %v", big)
	}
	// Protocol 0 text opcodes.
	v, err = unpickle([]byte("(dp0\nS'a'\np1\nI01\nsS'b'\nF1.5\nsV\\u00e9t\xe9\nL12345678901234567890L\ns."), nil)
	if err != nil {
		t.Fatal(err)
	}
	d = v.(*pyDict)
	if a, _ := d.get("a"); a != true {
		t.Errorf("a = %v", a)
	}
	if b, _ := d.get("b"); b != 1.5 {
		t.Errorf("b = %v", b)
	}
	if e, _ := d.get("\u00e9t\u00e9"); pyString(e) != "12345678901234567890" {
		t.Errorf("é = %v", e)
	}
}

func pyString(v any) string {
	if s, ok := v.(interface{ String() string }); ok {
		return s.String()
	}
	return ""
}

// FuzzTorchZip runs the whole PyTorch zip reader (zip directory, data.pkl,
// storages, tensor views) on arbitrary bytes.
func FuzzTorchZip(f *testing.F) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("archive/data.pkl")
	w.Write(tensorDictPickle([]plannedTensor{{name: "a", dtype: "F16", shape: []int{2, 2}}, {name: "b", dtype: "I64", shape: []int{3}}}, true))
	w, _ = zw.Create("archive/data/0")
	w.Write(make([]byte, 8))
	w, _ = zw.Create("archive/data/1")
	w.Write(make([]byte, 24))
	zw.Close()
	f.Add(buf.Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		z := &TorchZip{path: "fuzz", mm: data, files: map[string]*zip.File{},
			cache: map[string]*tensor.Tensor{}, storages: map[string][]byte{}}
		if err := z.load(); err != nil {
			return
		}
		for _, n := range z.Names() {
			x, err := z.Load(n)
			if err != nil {
				continue
			}
			if len(x.F32)+len(x.Half) != x.Numel() {
				t.Fatalf("%s: %d values for shape %v", n, len(x.F32)+len(x.Half), x.Shape)
			}
		}
	})
}
