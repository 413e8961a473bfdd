package unet_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
	"github.com/gosd/gosd/sd/unet"
)

// shapes is a Source of data-less tensors with the full-size shapes.
type shapes map[string][]int

func (s shapes) Get(n string) (*tensor.Tensor, bool) {
	sh, ok := s[n]
	return &tensor.Tensor{Shape: sh}, ok
}

func (s shapes) Names() []string {
	var out []string
	for n := range s {
		out = append(out, n)
	}
	return out
}

// TestInferFullFamilies infers the UNet configs of the full-size SD 2.1 and
// SDXL layouts and compares them with the released diffusers configs.
func TestInferFullFamilies(t *testing.T) {
	for _, c := range []struct {
		family string
		want   unet.Config
	}{
		{"sd21", unet.Config{InChannels: 4, OutChannels: 4, ModelChannels: 320, ChannelMult: []int{1, 2, 4, 4}, NumResBlocks: 2,
			Attention: []bool{true, true, true, false}, Depth: []int{1, 1, 1, 1}, MidDepth: 1, ContextDim: 1024,
			Heads: []int{5, 10, 20, 20}, MidHeads: 20, LinearProj: true, Groups: 32}},
		{"sdxl", unet.Config{InChannels: 4, OutChannels: 4, ModelChannels: 320, ChannelMult: []int{1, 2, 4}, NumResBlocks: 2,
			Attention: []bool{false, true, true}, Depth: []int{1, 2, 10}, MidDepth: 10, ContextDim: 2048,
			Heads: []int{5, 10, 20}, MidHeads: 20, LinearProj: true, Groups: 32, ADMChannels: 2816}},
	} {
		specs, err := testmodel.Names(testmodel.Options{Family: c.family, Size: "full", DType: tensor.F16})
		if err != nil {
			t.Fatal(err)
		}
		src := shapes{}
		for _, s := range specs {
			src[s.Name] = s.Shape
		}
		got, err := unet.InferConfig(src)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(*got, c.want) {
			t.Errorf("%s: inferred %+v\nwant %+v", c.family, *got, c.want)
		}
		raw, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "models", c.family, "unet", "config.json"))
		if err != nil {
			t.Logf("no shared config: %v", err)
			continue
		}
		parsed, err := unet.ParseConfig(raw)
		if err != nil {
			t.Fatal(err)
		}
		// diffusers lists a depth for level 0 of SDXL, which has no attention.
		parsed.Depth[0] = got.Depth[0]
		if !reflect.DeepEqual(*parsed, c.want) {
			t.Errorf("%s: parsed %+v\nwant %+v", c.family, *parsed, c.want)
		}
	}
}

// TestForwardADM runs the tiny SDXL UNet: y is required, checked, and
// changes the output.
func TestForwardADM(t *testing.T) {
	u := familyUNet(t, testmodel.Options{Family: "sdxl", Size: "tiny", DType: tensor.F32, Seed: 3, Std: 0.2})
	cfg := u.Config
	if cfg.ADMChannels != 160 || cfg.MidDepth != 2 || !reflect.DeepEqual(cfg.Attention, []bool{false, true, true}) {
		t.Fatalf("config %+v", cfg)
	}
	be := tensor.NewCPU()
	x := tensor.New(1, 4, 6, 5)
	ctx := tensor.New(1, 3, cfg.ContextDim)
	for i := range x.F32 {
		x.F32[i] = float32(i%7) / 7
	}
	for i := range ctx.F32 {
		ctx.F32[i] = float32(i%5) / 5
	}
	if _, err := u.Forward(be, x, []float32{500}, ctx); err == nil || !strings.Contains(err.Error(), "y [B, 160]") {
		t.Fatalf("missing y: %v", err)
	}
	if _, err := u.ForwardADM(be, x, []float32{500}, ctx, tensor.New(1, 159)); err == nil {
		t.Fatal("wrong y width accepted")
	}
	y1, y2 := tensor.New(1, 160), tensor.New(1, 160)
	for i := range y2.F32 {
		y2.F32[i] = 1
	}
	o1, err := u.ForwardADM(be, x, []float32{500}, ctx, y1)
	if err != nil {
		t.Fatal(err)
	}
	o2, err := u.ForwardADM(be, x, []float32{500}, ctx, y2)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o1.Shape, []int{1, 4, 6, 5}) {
		t.Fatalf("shape %v", o1.Shape)
	}
	var diff float64
	for i := range o1.F32 {
		d := float64(o1.F32[i] - o2.F32[i])
		diff += d * d
	}
	if diff < 1e-6 {
		t.Fatalf("y does not change the output (sum sq diff %g)", diff)
	}
	plain := familyUNet(t, testmodel.Options{Family: "sd21", Size: "tiny", DType: tensor.F32, Seed: 3})
	if _, err := plain.ForwardADM(be, x, []float32{1}, tensor.New(1, 3, 64), y1); err == nil ||
		!strings.Contains(err.Error(), "without label_emb") {
		t.Fatalf("y given to a UNet without label_emb: %v", err)
	}
}
