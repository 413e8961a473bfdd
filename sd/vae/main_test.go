package vae

import (
	"os"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

// TestMain fills every buffer handed back to the activation pool with NaN,
// so that a tensor read after its release, or a kernel that leaves part of
// a pooled destination unwritten, turns the tests' results into NaN.
func TestMain(m *testing.M) {
	tensor.PoisonPool(true)
	os.Exit(m.Run())
}
