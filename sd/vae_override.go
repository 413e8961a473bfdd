package sd

import (
	"fmt"
	"math"
	"strings"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/vae"
)

// vaeFile is a standalone VAE checkpoint presented in the original names
// (first_stage_model.*). It accepts the layouts VAE files are shared in:
// original names with or without the first_stage_model. prefix (for example
// vae-ft-mse-840000-ema-pruned), and diffusers names (the vae/ folder's
// diffusion_pytorch_model.safetensors, sdxl-vae-fp16-fix), whose mid-block
// attention matrices are reshaped to the original 1x1 convolutions.
type vaeFile struct {
	ck    *ckpt.Checkpoint
	names map[string]string // ldm name -> stored name
	list  []string
}

func openVAEFile(path string) (*vaeFile, error) {
	ck, err := ckpt.Open(path, ckpt.Options{})
	if err != nil {
		return nil, err
	}
	f := &vaeFile{ck: ck, names: map[string]string{}}
	stored := ck.Names()
	var diffusers []string
	for _, n := range stored {
		switch {
		case strings.HasPrefix(n, prefixVAE):
			f.names[n] = n
		case strings.HasPrefix(n, "decoder.mid_block.") || strings.HasPrefix(n, "decoder.up_blocks.") ||
			strings.HasPrefix(n, "encoder.down_blocks.") || strings.HasPrefix(n, "encoder.mid_block.") ||
			strings.HasPrefix(n, "decoder.conv_norm_out.") || strings.HasPrefix(n, "encoder.conv_norm_out."):
			diffusers = append(diffusers, "vae/"+n)
		case strings.HasPrefix(n, "encoder.") || strings.HasPrefix(n, "decoder.") ||
			strings.HasPrefix(n, "quant_conv.") || strings.HasPrefix(n, "post_quant_conv."):
			f.names[prefixVAE+n] = n
		}
	}
	if len(diffusers) > 0 {
		// A diffusers file also has conv_in, quant_conv, ...: map all names.
		f.names = map[string]string{}
		all := make([]string, 0, len(stored))
		for _, n := range stored {
			all = append(all, "vae/"+n)
		}
		km, err := ckpt.NewKeyMap(all)
		if err != nil {
			ck.Close()
			return nil, fmt.Errorf("vae %s: %w", path, err)
		}
		for _, n := range all {
			if ldm, ok := km.ToLDM(n); ok {
				f.names[ldm] = strings.TrimPrefix(n, "vae/")
			}
		}
	}
	if _, ok := f.names[prefixVAE+"decoder.conv_in.weight"]; !ok {
		ck.Close()
		return nil, fmt.Errorf("vae %s: no VAE decoder found (want decoder.conv_in.weight, with or without %q, or diffusers names)", path, prefixVAE)
	}
	for n := range f.names {
		f.list = append(f.list, n)
	}
	return f, nil
}

func (f *vaeFile) Names() []string { return append([]string(nil), f.list...) }

func (f *vaeFile) Get(name string) (*tensor.Tensor, bool) {
	n, ok := f.names[name]
	if !ok {
		return nil, false
	}
	t, ok := f.ck.Get(n)
	if ok && len(t.Shape) == 2 && strings.Contains(name, ".mid.attn_1.") && strings.HasSuffix(name, ".weight") {
		t = t.Reshape(t.Shape[0], t.Shape[1], 1, 1) // diffusers linear -> original 1x1 conv
	}
	return t, ok
}

func (f *vaeFile) Close() error { return f.ck.Close() }

// loadVAEOverride replaces the checkpoint's VAE with the one in path, keeping
// the model's latent scaling factor.
func (p *Pipeline) loadVAEOverride(path string) error {
	f, err := openVAEFile(path)
	if err != nil {
		return err
	}
	cfg, err := vae.InferKLConfig(f)
	if err == nil {
		cfg.ScalingFactor = p.vae.Config.ScalingFactor
		var m *vae.KL
		if m, err = vae.LoadKL(f, cfg); err == nil {
			p.vae, p.vaeFile = m, f
			return nil
		}
	}
	f.Close()
	return fmt.Errorf("vae %s: %w", path, err)
}

// finite reports whether every value is a finite number.
func finite(x []float32) bool {
	for _, v := range x {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return false
		}
	}
	return true
}
