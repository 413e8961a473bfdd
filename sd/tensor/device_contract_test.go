package tensor_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/gosd/gosd/sd/internal/devtest"
	"github.com/gosd/gosd/sd/tensor"
)

// TestDeviceContract checks the device-tensor contract of sd/tensor with the
// devtest backend: the helpers' behaviour on host and device backends, and
// that backends without device memory, a second device and a freed tensor
// all refuse with ErrBackend instead of reading memory they do not own.
func TestDeviceContract(t *testing.T) {
	cpu := tensor.NewCPU()
	dev := devtest.New(cpu)
	if be := tensor.OnDevice(cpu); be != tensor.Backend(cpu) {
		t.Errorf("OnDevice(CPU) = %v, want the CPU backend itself", be)
	}
	if h := tensor.EmptyOn(cpu, 2, 3); h.Dev != nil || len(h.F32) != 6 {
		t.Errorf("EmptyOn(CPU) = %+v, want a host tensor of 6 values", h)
	}
	scope := tensor.OnDevice(tensor.NewProfile(dev)) // a Profile around a device backend counts
	d := tensor.EmptyOn(scope, 2, 3)
	if d.Dev == nil || d.F32 != nil || d.Dev.Owner() != tensor.DeviceBackend(dev) {
		t.Fatalf("EmptyOn(OnDevice(Profile(devtest))) = %+v, want a devtest device tensor", d)
	}
	tensor.Release(d)
	if st := dev.Stats(); st.Live != 0 {
		t.Errorf("Release left %d device tensors live", st.Live)
	}

	x := tensor.FromF32([]float32{1, -2, 3, -4, 5, -6}, 2, 3)
	if u, err := tensor.Upload(cpu, x); err != nil || u != x {
		t.Errorf("Upload on the CPU = %v, %v; want x itself", u, err)
	}
	if _, err := tensor.Upload(scope, tensor.FromHalf(make([]uint16, 6), tensor.F16, 2, 3)); err == nil {
		t.Error("Upload of an f16 tensor succeeded")
	}
	xd, err := tensor.Upload(scope, x)
	if err != nil || xd.Dev == nil {
		t.Fatalf("Upload = %+v, %v", xd, err)
	}
	if got := xd.Float32s(); !slices.Equal(got, x.F32) {
		t.Errorf("Float32s of the device copy = %v, want %v", got, x.F32)
	}
	if c := xd.Reshape(3, 2).Clone(); c.Dev != nil || !slices.Equal(c.F32, x.F32) || !slices.Equal(c.Shape, []int{3, 2}) {
		t.Errorf("Clone of a reshaped device tensor = %+v", c)
	}
	yd := tensor.EmptyOn(scope, 2, 3)
	if err := scope.Unary(yd, xd, tensor.ReLU); err != nil {
		t.Fatal(err)
	}
	y, err := tensor.Download(yd)
	if err != nil || y.Dev != nil || !slices.Equal(y.F32, []float32{1, 0, 3, 0, 5, 0}) {
		t.Errorf("Download(ReLU on the device) = %+v, %v", y, err)
	}

	// Host-only backends refuse device tensors, op by op, without panicking.
	host := tensor.New(2, 3)
	w := tensor.New(3, 3)
	for _, be := range []tensor.Backend{cpu, tensor.NewRef()} {
		for name, op := range map[string]func() error{
			"linear":     func() error { return be.Linear(host, xd, w, nil) },
			"unary":      func() error { return be.Unary(host, xd, tensor.SiLU) },
			"add":        func() error { return be.Add(host, x, xd) },
			"scale dst":  func() error { return be.Scale(tensor.EmptyOn(scope, 2, 3), x, 2, 0) },
			"layer_norm": func() error { return be.LayerNorm(host, xd, tensor.New(3), tensor.New(3), 1e-5) },
			"transpose":  func() error { return be.Transpose(tensor.New(1, 3, 2), xd.Reshape(1, 2, 3)) },
		} {
			if err := op(); !errors.Is(err, tensor.ErrBackend) {
				t.Errorf("%s %s with a device tensor: %v, want ErrBackend", be.Name(), name, err)
			}
		}
	}

	// Another device backend's tensor, and a freed one.
	other := devtest.New(cpu)
	if err := other.Unary(tensor.EmptyOn(tensor.OnDevice(other), 2, 3), xd, tensor.ReLU); !errors.Is(err, tensor.ErrBackend) {
		t.Errorf("op on another device's tensor: %v, want ErrBackend", err)
	}
	tensor.Release(xd)
	if err := dev.Unary(tensor.EmptyOn(scope, 2, 3), xd, tensor.ReLU); !errors.Is(err, tensor.ErrBackend) {
		t.Errorf("op on a released device tensor: %v, want ErrBackend", err)
	}
}
