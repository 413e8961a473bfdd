package testckpt

import (
	"os"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

// Main runs a package's tests with the activation pool poisoned: every
// buffer handed back with tensor.Release is filled with NaN, so a tensor
// read after its release, or a kernel that leaves part of a pooled
// destination unwritten, turns the tests' results into NaN. Use it as
// func TestMain(m *testing.M) { testckpt.Main(m) }.
func Main(m *testing.M) {
	tensor.PoisonPool(true)
	os.Exit(m.Run())
}
