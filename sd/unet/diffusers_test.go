package unet

import (
	"reflect"
	"testing"

	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// TestDiffusersLayout loads the tiny test model from a diffusers folder
// (config.json plus diffusers names mapped by ckpt) and from its ldm
// single-file form (config inferred from shapes): configs and outputs must
// be identical.
func TestDiffusersLayout(t *testing.T) {
	ck, single := testckpt.TinyLayouts(t)
	cfg, err := ParseConfig(ck.Diffusers.Configs["unet"])
	if err != nil {
		t.Fatal(err)
	}
	ud, err := Load(ck, cfg)
	if err != nil {
		t.Fatal(err)
	}
	us, err := Load(single, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(us.Config, cfg) || !reflect.DeepEqual(cfg, tinyConfig()) {
		t.Fatalf("config.json gives %+v\nshapes give      %+v", cfg, us.Config)
	}
	be := tensor.NewCPU()
	x, ctx := randTensor(1, 1, 4, 6, 5), randTensor(2, 1, 3, 64)
	yd, err := ud.Forward(be, x, []float32{400}, ctx)
	if err != nil {
		t.Fatal(err)
	}
	ys, err := us.Forward(be, x, []float32{400}, ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := maxDiff(yd.F32, ys.F32); d != 0 {
		t.Errorf("diffusers and single-file models differ by %g", d)
	}
}
