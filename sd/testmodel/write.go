package testmodel

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/gosd/gosd/sd/ckpt"
)

// Write generates the model described by opts and writes it to opts.Output:
// a .safetensors file ("single"), a PyTorch zip with the weights under
// "state_dict" ("ckpt"), or a diffusers folder ("diffusers", with configs
// from ConfigDir adapted to the model size and tokenizer files copied from
// TokenizerDir). Tensors are generated one at a time while writing, so the
// full model needs little memory.
func Write(opts Options) error {
	if opts.Output == "" {
		return errors.New("testmodel: no output path")
	}
	src, err := NewSource(opts)
	if err != nil {
		return err
	}
	src.keep = false // stream: generate, write, drop
	meta := map[string]string{
		"format":    "pt",
		"generator": "gosd testmodel (random weights, not a trained model)",
		"seed":      fmt.Sprint(opts.Seed),
		"std":       fmt.Sprint(src.std),
		"size":      sizeName(opts.Size),
	}
	switch opts.Layout {
	case "", "single", "safetensors":
		return ckpt.WriteSafetensors(opts.Output, src, ckpt.WriteOptions{Metadata: meta})
	case "ckpt":
		return ckpt.WriteTorchZip(opts.Output, src, ckpt.WriteOptions{}, true)
	case "diffusers":
		dopts, err := diffusersFiles(opts)
		if err != nil {
			return err
		}
		return ckpt.WriteDiffusers(opts.Output, src, dopts)
	}
	return fmt.Errorf("testmodel: layout %q: want single, ckpt or diffusers", opts.Layout)
}

func sizeName(s string) string {
	if s == "" {
		return "tiny"
	}
	return s
}

// DefaultConfigDir finds ../shared/models/sd15 from the repository root
// (the folder above the working directory that holds go.mod).
func DefaultConfigDir() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "..", "shared", "models", "sd15")
			if _, err := os.Stat(filepath.Join(p, "model_index.json")); err != nil {
				return "", fmt.Errorf("testmodel: no SD 1.5 configs at %s (set ConfigDir): %w", p, err)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testmodel: no go.mod above the working directory to find ../shared/models/sd15 (set ConfigDir)")
		}
		dir = parent
	}
}

// diffusersFiles loads the real SD 1.5 configs and adapts them to the size.
func diffusersFiles(opts Options) (ckpt.DiffusersWriteOptions, error) {
	var out ckpt.DiffusersWriteOptions
	cdir := opts.ConfigDir
	if cdir == "" {
		d, err := DefaultConfigDir()
		if err != nil {
			return out, err
		}
		cdir = d
	}
	tdir := opts.TokenizerDir
	if tdir == "" {
		tdir = filepath.Join(cdir, "tokenizer")
	}
	if _, err := os.Stat(filepath.Join(tdir, "vocab.json")); err != nil {
		return out, fmt.Errorf("testmodel: tokenizer folder %s has no vocab.json: %w", tdir, err)
	}
	out.TokenizerDir = tdir
	mi, err := os.ReadFile(filepath.Join(cdir, "model_index.json"))
	if err != nil {
		return out, err
	}
	out.ModelIndex = mi
	out.Configs = map[string][]byte{}
	files := map[string]string{"unet": "unet/config.json", "vae": "vae/config.json",
		"text_encoder": "text_encoder/config.json", "scheduler": "scheduler/scheduler_config.json"}
	c, err := opts.config()
	if err != nil {
		return out, err
	}
	for comp, f := range files {
		b, err := os.ReadFile(filepath.Join(cdir, f))
		if err != nil {
			return out, err
		}
		if sizeName(opts.Size) == "tiny" && comp != "scheduler" {
			if b, err = adaptConfig(comp, b, c); err != nil {
				return out, fmt.Errorf("testmodel: %s: %w", f, err)
			}
		}
		out.Configs[comp] = b
	}
	return out, nil
}

// adaptConfig rewrites a real SD 1.5 component config for configuration c.
func adaptConfig(comp string, b []byte, c *config) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	repeat := func(s string, n int) []string {
		out := make([]string, n)
		for i := range out {
			out[i] = s
		}
		return out
	}
	switch comp {
	case "unet":
		chans := make([]int, len(c.unetMult))
		down, up := make([]string, len(chans)), make([]string, len(chans))
		for i, mlt := range c.unetMult {
			chans[i] = mlt * c.unetCh
			down[i] = "DownBlock2D"
			if c.unetAttn[i] {
				down[i] = "CrossAttnDownBlock2D"
			}
			up[len(chans)-1-i] = "UpBlock2D"
			if c.unetAttn[i] {
				up[len(chans)-1-i] = "CrossAttnUpBlock2D"
			}
		}
		m["block_out_channels"] = chans
		m["down_block_types"] = down
		m["up_block_types"] = up
		m["layers_per_block"] = c.unetNumRes
		m["cross_attention_dim"] = c.ctxDim
		m["attention_head_dim"] = c.unetHeads
		m["in_channels"] = c.unetIn
		m["out_channels"] = c.unetOut
		m["norm_num_groups"] = 32
	case "vae":
		chans := make([]int, len(c.vaeMult))
		for i, mlt := range c.vaeMult {
			chans[i] = mlt * c.vaeCh
		}
		m["block_out_channels"] = chans
		m["down_block_types"] = repeat("DownEncoderBlock2D", len(chans))
		m["up_block_types"] = repeat("UpDecoderBlock2D", len(chans))
		m["layers_per_block"] = c.vaeNumRes
		m["latent_channels"] = c.vaeZ
		m["norm_num_groups"] = 32
	case "text_encoder":
		m["hidden_size"] = c.clipDim
		m["intermediate_size"] = c.clipFF
		m["num_attention_heads"] = c.clipHeads
		m["num_hidden_layers"] = c.clipLayers
		m["max_position_embeddings"] = c.clipPos
		m["vocab_size"] = c.clipVocab
		m["projection_dim"] = c.clipDim
	}
	return json.MarshalIndent(m, "", "  ")
}
