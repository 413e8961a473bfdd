// Package pttest builds small PyTorch zip files for tests, byte by byte as
// torch.save lays them out, without torch.
package pttest

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"math"
)

// A1111Embedding returns the file AUTOMATIC1111's textual-inversion
// training saves with torch.save: {"string_to_token": {"*": 265},
// "string_to_param": {"*": <f32 tensor [n, c]>}, "name": name, "step": 10}
// as a PyTorch zip whose entries sit under archive/. v holds the n*c
// values, row-major.
func A1111Embedding(archive, name string, v []float32, n, c int) ([]byte, error) {
	var p bytes.Buffer
	str := func(s string) {
		p.WriteByte('X')
		binary.Write(&p, binary.LittleEndian, uint32(len(s)))
		p.WriteString(s)
	}
	num := func(x int) {
		p.WriteByte('J')
		binary.Write(&p, binary.LittleEndian, int32(x))
	}
	p.Write([]byte{0x80, 2, '}', '('})
	str("string_to_token")
	p.WriteByte('}')
	str("*")
	num(265)
	p.WriteByte('s')
	str("string_to_param")
	p.WriteByte('}')
	str("*")
	p.WriteString("ctorch._utils\n_rebuild_tensor_v2\n((")
	str("storage")
	p.WriteString("ctorch\nFloatStorage\n")
	str("0")
	str("cpu")
	num(n * c)
	p.Write([]byte{'t', 'Q'})
	num(0)
	p.WriteByte('(')
	num(n)
	num(c)
	p.Write([]byte{'t', '('})
	num(c)
	num(1)
	p.Write([]byte{'t', 0x88})
	p.WriteString("ccollections\nOrderedDict\n)R")
	p.Write([]byte{'t', 'R', 's'})
	str("name")
	str(name)
	str("step")
	num(10)
	p.Write([]byte{'u', '.'})
	var data bytes.Buffer
	for _, x := range v {
		binary.Write(&data, binary.LittleEndian, math.Float32bits(x))
	}
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range []struct {
		name string
		b    []byte
	}{{archive + "/data.pkl", p.Bytes()}, {archive + "/data/0", data.Bytes()}, {archive + "/version", []byte("3\n")}} {
		w, err := zw.Create(e.name)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(e.b); err != nil {
			return nil, err
		}
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
