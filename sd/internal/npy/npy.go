// Package npy reads and writes NumPy .npy files holding little-endian float32
// arrays in C order, the format of gosd's golden test tensors.
package npy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
)

var shapeRe = regexp.MustCompile(`'shape':\s*\(([^)]*)\)`)

// Read parses a float32 .npy file and returns its data and shape.
func Read(path string) ([]float32, []int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	data, shape, err := Decode(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return data, shape, nil
}

// Decode parses the bytes of a float32 .npy file.
func Decode(b []byte) ([]float32, []int, error) {
	if len(b) < 10 || !bytes.HasPrefix(b, []byte("\x93NUMPY")) {
		return nil, nil, errors.New("not a .npy file")
	}
	var hlen, off int
	switch b[6] {
	case 1:
		hlen, off = int(binary.LittleEndian.Uint16(b[8:10])), 10
	case 2, 3:
		if len(b) < 12 {
			return nil, nil, errors.New("truncated .npy header")
		}
		hlen, off = int(binary.LittleEndian.Uint32(b[8:12])), 12
	default:
		return nil, nil, fmt.Errorf("unsupported .npy version %d", b[6])
	}
	if off+hlen > len(b) {
		return nil, nil, errors.New("truncated .npy header")
	}
	hdr := string(b[off : off+hlen])
	if !strings.Contains(hdr, "'<f4'") {
		return nil, nil, fmt.Errorf("only little-endian float32 is supported, header %q", hdr)
	}
	if strings.Contains(hdr, "'fortran_order': True") {
		return nil, nil, errors.New("fortran order is not supported")
	}
	m := shapeRe.FindStringSubmatch(hdr)
	if m == nil {
		return nil, nil, fmt.Errorf("no shape in header %q", hdr)
	}
	var shape []int
	n := 1
	for _, f := range strings.Split(m[1], ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		d, err := strconv.Atoi(f)
		if err != nil || d < 0 {
			return nil, nil, fmt.Errorf("bad shape %q", m[1])
		}
		shape = append(shape, d)
		n *= d
	}
	body := b[off+hlen:]
	if len(body) != 4*n {
		return nil, nil, fmt.Errorf("data is %d bytes, shape %v needs %d", len(body), shape, 4*n)
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(body[4*i:]))
	}
	return out, shape, nil
}

// Write stores data with the given shape as a version 1.0 float32 .npy file.
func Write(w io.Writer, data []float32, shape []int) error {
	dims := make([]string, len(shape))
	for i, d := range shape {
		dims[i] = strconv.Itoa(d)
	}
	s := strings.Join(dims, ", ")
	if len(shape) == 1 {
		s += ","
	}
	hdr := fmt.Sprintf("{'descr': '<f4', 'fortran_order': False, 'shape': (%s), }", s)
	pad := 64 - (10+len(hdr)+1)%64
	hdr += strings.Repeat(" ", pad%64) + "\n"
	var buf bytes.Buffer
	buf.WriteString("\x93NUMPY\x01\x00")
	binary.Write(&buf, binary.LittleEndian, uint16(len(hdr)))
	buf.WriteString(hdr)
	for _, v := range data {
		binary.Write(&buf, binary.LittleEndian, math.Float32bits(v))
	}
	_, err := w.Write(buf.Bytes())
	return err
}
