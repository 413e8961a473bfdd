package vae

import (
	"slices"
	"testing"

	"github.com/gosd/gosd/sd/internal/devtest"
	"github.com/gosd/gosd/sd/tensor"
)

// TestKLDeviceResident: decode and encode on a device backend (devtest over
// the CPU backend) give the CPU backend's numbers with every activation in
// device memory, one upload, one copy back and nothing left allocated.
func TestKLDeviceResident(t *testing.T) {
	m := klLoadTiny(t, 3)
	cpu := tensor.NewCPU()
	dev := devtest.New(cpu)
	check := func(what string) {
		t.Helper()
		if st := dev.Stats(); st.Live != 0 || st.HostInput != 0 || st.HostOut != 0 || st.ToDevice != 1 || st.ToHost != 1 {
			t.Errorf("%s: %+v; want nothing live, no host activation in an op, one upload, one copy back", what, st)
		}
		dev.ResetCounts()
	}
	z := klRand(4, 1, 4, 5, 6)
	want, err := m.Decode(cpu, z)
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Decode(dev, z)
	if err != nil {
		t.Fatal(err)
	}
	if got.Dev != nil || !slices.Equal(got.F32, want.F32) {
		t.Error("decode: the device run differs from the CPU run")
	}
	check("decode")

	x := klRand(5, 1, 3, 16, 24)
	wm, wl, err := m.Encode(cpu, x)
	if err != nil {
		t.Fatal(err)
	}
	gm, gl, err := m.Encode(dev, x)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gm.F32, wm.F32) || !slices.Equal(gl.F32, wl.F32) {
		t.Error("encode: the device run differs from the CPU run")
	}
	check("encode")
}
