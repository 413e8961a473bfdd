package ckpt_test

import (
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// BenchmarkOpenSD15 opens the 2.1 GB shared SD 1.5 file and fetches every
// tensor once (memory-mapped: no weight bytes are copied).
func BenchmarkOpenSD15(b *testing.B) {
	path := testckpt.SD15(b)
	for b.Loop() {
		c, err := ckpt.Open(path, ckpt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range c.Names() {
			if _, ok := c.Get(n); !ok {
				b.Fatal(n)
			}
		}
		c.Close()
	}
}

// BenchmarkOpenTinyCkpt opens the tiny model written as a PyTorch zip and
// fetches every tensor (unpickling, storage lookup, aliasing).
func BenchmarkOpenTinyCkpt(b *testing.B) {
	path := testckpt.Tiny(b, "ckpt", tensor.F16)
	for b.Loop() {
		c, err := ckpt.Open(path, ckpt.Options{})
		if err != nil {
			b.Fatal(err)
		}
		for _, n := range c.Names() {
			c.Get(n)
		}
		c.Close()
	}
}
