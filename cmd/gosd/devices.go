package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/device"
	"github.com/gosd/gosd/sd/tensor"
)

func runDevices(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("devices", stderr)
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	gpus, err := device.List()
	if errors.Is(err, device.ErrNoDriver) {
		fmt.Fprintln(stdout, "no NVIDIA driver found: no GPUs available (the CPU backend works without one)")
		return nil
	}
	if err != nil {
		return err
	}
	if len(gpus) == 0 {
		fmt.Fprintln(stdout, "the NVIDIA driver reports no GPUs")
		return nil
	}
	for _, g := range gpus {
		fmt.Fprintf(stdout, "%d  %s  driver %s  CUDA %s  memory %s total, %s free\n",
			g.Index, g.Name, g.DriverVersion, g.CUDAVersion, device.GiB(g.TotalBytes), device.GiB(g.FreeBytes))
	}
	return nil
}

// checkGPU refuses a GPU run that the chosen device's memory cannot hold:
// the model's weights as stored in its checkpoint plus the activations of
// a width x height image (SD 1.5 in f16 when the checkpoint cannot be read
// here; Load then reports why).
func checkGPU(index, width, height int, model string, ema bool) error {
	gpus, err := device.List()
	if err != nil {
		return err
	}
	need := device.EstimateSD15(width, height, 1, tensor.F16)
	if ck, err := ckpt.Open(model, ckpt.Options{UseEMA: ema}); err == nil {
		need = device.Estimate(uint64(ckpt.Describe(ck).InferenceBytes), width, height, 1)
		ck.Close()
	}
	for _, g := range gpus {
		if g.Index == index {
			return device.CheckFits(g, need)
		}
	}
	return fmt.Errorf("--device %d: no such GPU (%d found; see gosd devices)", index, len(gpus))
}
