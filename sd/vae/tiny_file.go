package vae

import (
	"bytes"
	"fmt"
	"io"
	"os"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// LoadTinyFile builds a tiny encoder or decoder from a weight file holding
// one half with the original key names: a PyTorch zip (.pth, as released in
// the taesd repository) or a .safetensors file. The weights (a few MB) are
// copied out, so the file is closed on return.
func LoadTinyFile(path string) (*Tiny, error) {
	src, closeFn, err := openTinySource(path)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	copied := tensor.MapSource{}
	for _, n := range src.Names() {
		t, ok := src.Get(n)
		if !ok {
			return nil, fmt.Errorf("vae: %s: cannot read tensor %q", path, n)
		}
		copied[n] = t.Clone()
	}
	m, err := LoadTiny(copied, "")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// openTinySource opens path with the reader its first bytes call for.
func openTinySource(path string) (tensor.Source, func() error, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	head := make([]byte, 4)
	n, _ := io.ReadFull(f, head)
	f.Close()
	if bytes.HasPrefix(head[:n], []byte("PK")) {
		z, err := ckpt.OpenTorchZip(path)
		if err != nil {
			return nil, nil, err
		}
		return z, z.Close, nil
	}
	s, err := ckpt.OpenSafetensors(path)
	if err != nil {
		return nil, nil, err
	}
	return s, s.Close, nil
}
