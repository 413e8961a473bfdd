package sd

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// TestCheckpointsInTheWild: files that carry tensors the model does not use
// (a merged ControlNet) load with one warning that counts them, and files
// with model_ema.* copies use the regular weights unless UseEMA asks for the
// EMA ones.
func TestCheckpointsInTheWild(t *testing.T) {
	path := testckpt.Tiny(t, "single", tensor.F16)
	ck, err := ckpt.Open(path, ckpt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	src := tensor.MapSource{}
	for _, n := range ck.Names() {
		w, _ := ck.Get(n)
		src[n] = w
		if strings.HasPrefix(n, prefixUNet) && strings.HasSuffix(n, ".weight") && len(w.Shape) > 1 {
			e := w.ToF32().Clone()
			for i := range e.F32 {
				e.F32[i] *= -1
			}
			src[ckpt.EMAName(n)] = e
		}
	}
	for _, n := range []string{"control_model.input_hint_block.0.weight", "control_model.zero_convs.0.0.weight", "control_model.middle_block_out.0.bias"} {
		src[n] = tensor.New(4)
	}
	wild := filepath.Join(t.TempDir(), "wild.safetensors")
	if err := ckpt.WriteSafetensors(wild, src, ckpt.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	req := Request{Prompt: "a fox", Width: 32, Height: 32, Steps: 2, Sampler: "euler", Seed: 9}
	gen := func(model string, ema bool, log *slog.Logger) []byte {
		t.Helper()
		p, err := Load(context.Background(), model, Options{Tokenizer: tinyTokenizer(t), UseEMA: ema, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		res, err := p.Generate(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return nrgba(res.Image)
	}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	base := gen(path, false, nil)
	if got := gen(wild, false, log); !bytes.Equal(got, base) {
		t.Error("extra and EMA tensors changed the image made from the regular weights")
	}
	if n := strings.Count(logs.String(), "does not use"); n != 1 || !strings.Contains(logs.String(), "count=3") {
		t.Errorf("want one warning counting 3 unused tensors, got:\n%s", logs.String())
	}
	if got := gen(wild, true, nil); bytes.Equal(got, base) {
		t.Error("UseEMA did not switch to the model_ema.* weights")
	}
	if _, err := Load(context.Background(), path, Options{Tokenizer: tinyTokenizer(t), UseEMA: true}); err == nil {
		t.Error("UseEMA on a file without EMA weights must fail")
	}
}
