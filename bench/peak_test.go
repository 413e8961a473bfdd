package bench

import (
	"math"
	"testing"
	"time"

	"github.com/gosd/gosd/sd/tensor"
)

func TestMeasureClock(t *testing.T) {
	c, err := ReadCPUInfo(2)
	if err != nil {
		t.Skip(err)
	}
	nominal := c.PeakF32()
	if err := c.MeasureClock(0.05); err != nil {
		t.Fatal(err)
	}
	if c.MeasuredMHz < 300 || c.MeasuredMHz > 8000 {
		t.Fatalf("measured clock %.0f MHz", c.MeasuredMHz)
	}
	if want := 2 * c.F32FlopPerCycle * c.MeasuredMHz / 1e3; math.Abs(c.PeakF32()-want) > 1e-9 {
		t.Fatalf("PeakF32 %.1f, want %.1f from the measured clock", c.PeakF32(), want)
	}
	if c.BF16 && math.Abs(c.PeakBF16()-2*c.PeakF32()) > 1e-9 && !c.AMX {
		t.Fatalf("PeakBF16 %.1f, want twice PeakF32 %.1f", c.PeakBF16(), c.PeakF32())
	}
	t.Logf("clock %.0f MHz (nominal %.0f), f32 peak %.0f GFLOP/s (nominal-clock figure %.0f); %s", c.MeasuredMHz, c.MHz, c.PeakF32(), nominal, c.PeakNote)
}

func TestRunKernelsPrecision(t *testing.T) {
	be := tensor.NewCPU()
	x, w, y := tensor.New(64, 96), tensor.New(96, 96), tensor.New(64, 96)
	cases := []KernelCase{{Op: "linear", Shape: "64x96x96", FLOP: 2 * 64 * 96 * 96,
		run: func(be tensor.Backend) error { return be.Linear(y, x, w, nil) }}}
	rs, err := RunKernels(be, cases, tensor.F16, 100, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 1 || rs[0].Precision != "f32" || rs[0].Impl != "gosd" || !(rs[0].GFLOPS > 0) {
		t.Fatalf("results %+v", rs)
	}
	if !tensor.CPUHasBF16() || be.Name() == "cpu/portable" { // no bf16 kernels to run
		return
	}
	if err := be.SetPrecision("bf16"); err != nil {
		t.Fatal(err)
	}
	defer be.SetPrecision("f32")
	rs, err = RunKernels(be, cases, tensor.F16, 100, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Precision != "bf16" {
		t.Fatalf("precision %q with bf16 selected", rs[0].Precision)
	}
}
