package vae

import (
	"context"
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

// TestTinyDeviceResident: the TAESD/TAEF2 encoders and decoders (with and
// without the pool branch) on a device backend give the CPU backend's
// numbers with every activation in device memory and nothing left allocated.
func TestTinyDeviceResident(t *testing.T) {
	cpu := tensor.NewCPU()
	dev := devtest.New(cpu)
	for _, c := range []struct {
		role  TinyRole
		pool  bool
		in    *fmap
		latCh int
	}{
		{TinyEncoder, false, randFmap(3, 16, 24, 1, 1), 4},
		{TinyEncoder, true, randFmap(3, 16, 16, 1, 2), 32},
		{TinyDecoder, false, randFmap(4, 2, 3, 8, 3), 4},
		{TinyDecoder, true, randFmap(32, 2, 2, 8, 4), 32},
	} {
		m, err := LoadTiny(tinySource(c.role, 4, c.latCh, c.pool, uint64(c.latCh)), "")
		if err != nil {
			t.Fatal(err)
		}
		x := toTensor(c.in)
		want, err := m.Forward(context.Background(), cpu, x)
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Forward(context.Background(), dev, x)
		if err != nil {
			t.Fatal(err)
		}
		if got.Dev != nil || !slices.Equal(got.F32, want.F32) {
			t.Errorf("%v pool=%v: the device run differs from the CPU run", c.role, c.pool)
		}
		if st := dev.Stats(); st.Live != 0 || st.HostInput != 0 || st.HostOut != 0 || st.ToDevice != 1 || st.ToHost != 1 {
			t.Errorf("%v pool=%v: %+v; want nothing live, no host activation in an op, one upload, one copy back",
				c.role, c.pool, st)
		}
		dev.ResetCounts()
	}
}
