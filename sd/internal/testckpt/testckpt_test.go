package testckpt_test

import (
	"math"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

func TestSD15(t *testing.T) {
	if testing.Short() {
		t.Skip("builds or reuses the 2.1 GB random SD 1.5 checkpoint")
	}
	p := testckpt.SD15(t)
	s, err := ckpt.OpenSafetensors(p)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if n := len(s.Names()); n != 1145 {
		t.Errorf("%d tensors, want 1145 (unet 686 + vae 248 + clip 197 + 12 schedule buffers + 2 model_ema scalars)", n)
	}
	w, ok := s.Get("model.diffusion_model.input_blocks.0.0.weight")
	if !ok || w.DType != tensor.F16 || !tensor.SameShape(w.Shape, []int{320, 4, 3, 3}) {
		t.Fatalf("conv_in weight = %v", w)
	}
	var sum, sq float64
	for _, v := range w.Float32s() {
		sum += float64(v)
		sq += float64(v) * float64(v)
	}
	n := float64(w.Numel())
	if std := math.Sqrt(sq/n - (sum/n)*(sum/n)); math.Abs(std-0.02) > 0.002 {
		t.Errorf("conv_in weight std %.4f, want about 0.02", std)
	}
	g, _ := s.Get("first_stage_model.decoder.norm_out.weight")
	if g.Float32s()[0] != 1 {
		t.Errorf("norm weight %v, want 1", g.Float32s()[0])
	}
	ids, _ := s.Get("cond_stage_model.transformer.text_model.embeddings.position_ids")
	if ids.F32[76] != 76 {
		t.Errorf("position_ids[76] = %v", ids.F32[76])
	}
}

func TestTiny(t *testing.T) {
	for _, layout := range []string{"single", "ckpt", "diffusers"} {
		p := testckpt.Tiny(t, layout, tensor.F16)
		c, err := ckpt.Open(p, ckpt.Options{})
		if err != nil {
			t.Fatal(err)
		}
		w, ok := c.Get("model.diffusion_model.input_blocks.0.0.weight")
		if !ok || w.DType != tensor.F16 || !tensor.SameShape(w.Shape, []int{32, 4, 3, 3}) {
			t.Errorf("%s: conv_in weight %v", layout, w)
		}
		c.Close()
	}
}
