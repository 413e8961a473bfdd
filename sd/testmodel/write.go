package testmodel

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
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
		c, _ := opts.config()
		var out tensor.Source = src
		if c.family == "sd21" {
			// Diffusers' SD 2.x text encoder drops OpenCLIP's last layer,
			// which SD 2.x never uses.
			out = dropPrefix{src, fmt.Sprintf("%stransformer.resblocks.%d.", c.ocPrefix, c.ocLayers-1)}
		}
		return ckpt.WriteDiffusers(opts.Output, out, dopts)
	}
	return fmt.Errorf("testmodel: layout %q: want single, ckpt or diffusers", opts.Layout)
}

// dropPrefix hides the tensors under a prefix.
type dropPrefix struct {
	*Source
	prefix string
}

func (d dropPrefix) Names() []string {
	var out []string
	for _, n := range d.Source.Names() {
		if !strings.HasPrefix(n, d.prefix) {
			out = append(out, n)
		}
	}
	return out
}

func sizeName(s string) string {
	if s == "" {
		return "tiny"
	}
	return s
}

// DefaultConfigDir finds ../shared/models/sd15 from the repository root
// (the folder above the working directory that holds go.mod).
func DefaultConfigDir() (string, error) { return defaultDir("sd15") }

// familyDir names the shared config folder of a family.
func familyDir(family string) string {
	switch family {
	case "sd21", "sdxl":
		return family
	}
	return "sd15"
}

func defaultDir(sub string) (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			p := filepath.Join(dir, "..", "shared", "models", sub)
			if _, err := os.Stat(filepath.Join(p, "model_index.json")); err != nil {
				return "", fmt.Errorf("no %s configs at %s (gosd testmodel: --config-dir DIR; SDK: ConfigDir): %w", sub, p, err)
			}
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("the diffusers layout needs the real %s configs: give their folder "+
				"(gosd testmodel: --config-dir DIR, e.g. shared/models/%s; SDK: ConfigDir); without it they are "+
				"looked for in ../shared/models/%s beside the checkout that holds the working directory", sub, sub, sub)
		}
		dir = parent
	}
}

// diffusersFiles loads the family's real configs and adapts them to the
// size. SD 2.x and SDXL use CLIP's vocabulary too: without TokenizerDir
// their tokenizer files come from ../shared/models/sd15/tokenizer.
func diffusersFiles(opts Options) (ckpt.DiffusersWriteOptions, error) {
	var out ckpt.DiffusersWriteOptions
	c, err := opts.config()
	if err != nil {
		return out, err
	}
	cdir := opts.ConfigDir
	if cdir == "" {
		d, err := defaultDir(familyDir(c.family))
		if err != nil {
			return out, err
		}
		cdir = d
	}
	tdir := opts.TokenizerDir
	if tdir == "" {
		tdir = filepath.Join(cdir, "tokenizer")
		if c.family == "sd21" || c.family == "sdxl" {
			d, err := defaultDir("sd15")
			if err != nil {
				return out, err
			}
			tdir = filepath.Join(d, "tokenizer")
		}
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
	if c.family == "sdxl" {
		files["text_encoder_2"] = "text_encoder_2/config.json"
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
		if c.unetHeadCh > 0 {
			heads := make([]int, len(chans))
			for i, w := range chans {
				heads[i] = c.heads(w)
			}
			m["attention_head_dim"] = heads
		}
		if c.unetDepth != nil {
			d := make([]int, len(chans))
			for i := range d {
				d[i] = max(1, c.unetDepth[i])
			}
			d[len(d)-1] = c.mid() // diffusers' middle block takes the last level's depth
			m["transformer_layers_per_block"] = d
		}
		if c.admIn > 0 {
			m["projection_class_embeddings_input_dim"] = c.admIn
			m["addition_time_embed_dim"] = c.timeDim
		}
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
	case "text_encoder_2":
		m["hidden_size"] = c.ocDim
		m["intermediate_size"] = c.ocFF
		m["num_attention_heads"] = c.ocDim / 64
		m["num_hidden_layers"] = c.ocLayers
		m["projection_dim"] = c.ocProj
	case "text_encoder":
		if c.noCLIP { // SD 2.x: OpenCLIP without its last layer
			m["hidden_size"] = c.ocDim
			m["intermediate_size"] = c.ocFF
			m["num_attention_heads"] = c.ocDim / 64
			m["num_hidden_layers"] = c.ocLayers - 1
			m["vocab_size"] = c.clipVocab
			break
		}
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
