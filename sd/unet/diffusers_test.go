package unet

import (
	"path/filepath"
	"reflect"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// TestDiffusersLayout loads the tiny test model from a diffusers folder
// (config.json plus diffusers names mapped by ckpt) and from its ldm
// single-file form (config inferred from shapes): configs and outputs must
// be identical.
func TestDiffusersLayout(t *testing.T) {
	if _, err := testmodel.DefaultConfigDir(); err != nil {
		t.Skipf("no diffusers configs to write the folder with: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := testmodel.Write(testmodel.Options{Layout: "diffusers", Output: dir, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	ck, err := ckpt.Open(dir, ckpt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	cfg, err := ParseConfig(ck.Diffusers.Configs["unet"])
	if err != nil {
		t.Fatal(err)
	}
	ud, err := Load(ck, cfg)
	if err != nil {
		t.Fatal(err)
	}
	single, err := testmodel.NewSource(testmodel.Options{Seed: 7})
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
