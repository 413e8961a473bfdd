package vae

import (
	"reflect"
	"testing"

	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// TestKLDiffusersLayout loads the tiny test autoencoder from a diffusers
// folder (config.json, diffusers names mapped by ckpt) and from its ldm
// single-file form (config inferred): configs and decodes must be identical.
func TestKLDiffusersLayout(t *testing.T) {
	ck, single := testckpt.TinyLayouts(t)
	cfg, err := ParseKLConfig(ck.Diffusers.Configs["vae"])
	if err != nil {
		t.Fatal(err)
	}
	md, err := LoadKL(ck, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := LoadKL(single, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(ms.Config, cfg) || !reflect.DeepEqual(cfg, klTinyConfig()) {
		t.Fatalf("config.json gives %+v\nshapes give      %+v", cfg, ms.Config)
	}
	be := tensor.NewCPU()
	z := klRand(1, 1, 4, 3, 5)
	a, err := md.Decode(be, z)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ms.Decode(be, z)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := klMaxDiff(a.F32, b.F32); d != 0 {
		t.Errorf("diffusers and single-file decodes differ by %g", d)
	}
	ma, _, err := md.Encode(be, b)
	if err != nil {
		t.Fatal(err)
	}
	mb, _, err := ms.Encode(be, b)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := klMaxDiff(ma.F32, mb.F32); d != 0 {
		t.Errorf("diffusers and single-file encodes differ by %g", d)
	}
}
