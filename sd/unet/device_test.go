package unet_test

import (
	"slices"
	"testing"

	"github.com/gosd/gosd/sd/internal/devtest"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// TestDeviceResident runs the UNet on a device backend (devtest over the
// CPU backend) and checks the contract the CUDA backend relies on: the same
// numbers as the CPU backend, every activation inside the call in device
// memory (no op reads or writes a host activation), the inputs crossing once
// each, one copy back, and nothing left allocated; at an even size and at an
// odd one (whose upsamplers drop a row or column).
func TestDeviceResident(t *testing.T) {
	for _, fam := range []string{"sd15", "sdxl"} {
		u := familyUNet(t, testmodel.Options{Family: fam, Size: "tiny", DType: tensor.F16, Seed: 5, Std: 0.2})
		cfg := u.Config
		for _, sz := range [][2]int{{8, 12}, {7, 5}} {
			x := tensor.New(2, cfg.InChannels, sz[0], sz[1])
			ctx := tensor.New(2, 3, cfg.ContextDim)
			for i := range x.F32 {
				x.F32[i] = float32(i%11)/11 - 0.4
			}
			for i := range ctx.F32 {
				ctx.F32[i] = float32(i%7)/7 - 0.5
			}
			var y *tensor.Tensor
			inputs := 3 // x, ctx and the timestep embedding
			if cfg.ADMChannels > 0 {
				y = tensor.New(2, cfg.ADMChannels)
				for i := range y.F32 {
					y.F32[i] = float32(i%5) / 5
				}
				inputs++
			}
			ts := []float32{999, 321.5}
			cpu := tensor.NewCPU()
			want, err := u.ForwardADM(cpu, x, ts, ctx, y)
			if err != nil {
				t.Fatal(err)
			}
			dev := devtest.New(cpu)
			got, err := u.ForwardADM(tensor.NewProfile(dev), x, ts, ctx, y)
			if err != nil {
				t.Fatalf("%s %v: %v", fam, sz, err)
			}
			if got.Dev != nil || !slices.Equal(got.F32, want.F32) {
				t.Errorf("%s %v: the device run differs from the CPU run", fam, sz)
			}
			st := dev.Stats()
			if st.Live != 0 || st.HostInput != 0 || st.HostOut != 0 || st.ToDevice != inputs || st.ToHost != 1 {
				t.Errorf("%s %v: %+v; want nothing live, no host activation in an op, %d inputs uploaded, 1 copy back",
					fam, sz, st, inputs)
			}
		}
	}
}
