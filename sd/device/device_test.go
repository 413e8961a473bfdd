package device

import (
	"errors"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"

	"github.com/gosd/gosd/sd/tensor"
)

// TestListNoDriver runs List on this machine: without an NVIDIA driver it
// must return ErrNoDriver; with one it must list GPUs with sane numbers.
func TestListNoDriver(t *testing.T) {
	gpus, err := List()
	if errors.Is(err, ErrNoDriver) {
		if gpus != nil {
			t.Fatalf("List returned %v with ErrNoDriver", gpus)
		}
		return
	}
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	t.Skipf("an NVIDIA driver is present (%d GPUs); the no-driver path cannot be tested here", len(gpus))
}

func TestListDriverNotLoaded(t *testing.T) {
	for _, ret := range []nvml.Return{nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED} {
		lib := &mock.Interface{InitFunc: func() nvml.Return { return ret }}
		if _, err := list(lib); !errors.Is(err, ErrNoDriver) {
			t.Errorf("Init returning %v: err = %v, want ErrNoDriver", ret, err)
		}
	}
	lib := &mock.Interface{InitFunc: func() nvml.Return { return nvml.ERROR_NO_PERMISSION }}
	if _, err := list(lib); err == nil || errors.Is(err, ErrNoDriver) || !strings.Contains(strings.ToLower(err.Error()), "permission") {
		t.Errorf("Init returning ERROR_NO_PERMISSION: err = %v, want a plain error naming it", err)
	}
}

// TestListMock: List on a mocked two-GPU machine fills every field and
// shuts NVML down again.
func TestListMock(t *testing.T) {
	shut := 0
	dev := func(name string, total, free uint64) nvml.Device {
		return &mock.Device{
			GetNameFunc:       func() (string, nvml.Return) { return name, nvml.SUCCESS },
			GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: total, Free: free}, nvml.SUCCESS },
		}
	}
	devs := []nvml.Device{dev("NVIDIA H200", 150<<30, 149<<30), dev("NVIDIA A100-SXM4-80GB", 80<<30, 10<<30)}
	lib := &mock.Interface{
		InitFunc:                       func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:                   func() nvml.Return { shut++; return nvml.SUCCESS },
		SystemGetDriverVersionFunc:     func() (string, nvml.Return) { return "570.86.15", nvml.SUCCESS },
		SystemGetCudaDriverVersionFunc: func() (int, nvml.Return) { return 12080, nvml.SUCCESS },
		DeviceGetCountFunc:             func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc:     func(i int) (nvml.Device, nvml.Return) { return devs[i], nvml.SUCCESS },
	}
	gpus, err := list(lib)
	if err != nil {
		t.Fatal(err)
	}
	want := []GPU{
		{0, "NVIDIA H200", "570.86.15", "12.8", 150 << 30, 149 << 30},
		{1, "NVIDIA A100-SXM4-80GB", "570.86.15", "12.8", 80 << 30, 10 << 30},
	}
	if len(gpus) != len(want) {
		t.Fatalf("got %d GPUs, want %d", len(gpus), len(want))
	}
	for i := range want {
		if gpus[i] != want[i] {
			t.Errorf("GPU %d = %+v, want %+v", i, gpus[i], want[i])
		}
	}
	if shut != 1 {
		t.Errorf("Shutdown called %d times, want 1", shut)
	}
}

func TestEstimateSD15(t *testing.T) {
	const gib = 1 << 30
	params := uint64(SD15UNetParams + SD15TextParams + SD15DecoderParams)
	if params < 1_030_000_000 || params > 1_035_000_000 {
		t.Fatalf("SD 1.5 UNet+CLIP+decoder = %d parameters, want about 1.032e9", params)
	}
	e512 := EstimateSD15(512, 512, 1, tensor.F16)
	// Known result from the documented model: 2*params + 1.25*VAE peak (1024
	// f32 values per pixel) + 768 MiB.
	want := 2*params + 1024*512*512*4*5/4 + 768<<20
	if e512 != want {
		t.Errorf("512x512 f16 = %d, want %d", e512, want)
	}
	// SD 1.5 in f16 is commonly run on 4-6 GB cards at 512x512.
	if e512 < 3*gib || e512 > 5*gib {
		t.Errorf("512x512 f16 = %.2f GiB, want between 3 and 5", float64(e512)/gib)
	}
	// f32 weights cost exactly 2 more bytes per parameter.
	if d := EstimateSD15(512, 512, 1, tensor.F32) - e512; d != 2*params {
		t.Errorf("f32 - f16 = %d bytes, want %d", d, 2*params)
	}
	if EstimateSD15(512, 512, 1, tensor.BF16) != e512 {
		t.Error("bf16 and f16 estimates differ")
	}
	// The VAE decode dominates and grows with pixels and batch.
	e1024 := EstimateSD15(1024, 1024, 1, tensor.F16)
	if d := e1024 - e512; d != 1024*(1024*1024-512*512)*4*5/4 {
		t.Errorf("1024x1024 - 512x512 = %d bytes, want the VAE growth", d)
	}
	if d := EstimateSD15(512, 512, 4, tensor.F16) - e512; d != 3*1024*512*512*4*5/4 {
		t.Errorf("batch 4 - batch 1 = %d bytes, want 3 more VAE peaks", d)
	}
	if EstimateSD15(0, 512, 1, tensor.F16) != 0 || EstimateSD15(512, 512, -1, tensor.F16) != 0 {
		t.Error("bad sizes must estimate 0")
	}
}

func TestCheckFits(t *testing.T) {
	g := GPU{Index: 1, Name: "NVIDIA H200", TotalBytes: 141 << 30, FreeBytes: 2 << 30}
	if err := CheckFits(g, 2<<30); err != nil {
		t.Errorf("exact fit: %v", err)
	}
	err := CheckFits(g, EstimateSD15(512, 512, 1, tensor.F16))
	if !errors.Is(err, ErrInsufficientMemory) {
		t.Fatalf("4 GiB on 2 GiB free: %v, want ErrInsufficientMemory", err)
	}
	msg := err.Error()
	for _, s := range []string{"GPU 1", "NVIDIA H200", "3.9 GiB", "2.0 GiB", "141.0 GiB"} {
		if !strings.Contains(msg, s) {
			t.Errorf("message %q lacks %q", msg, s)
		}
	}
}
