package ckpt

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gosd/gosd/sd/tensor"
)

// Options tune Open.
type Options struct {
	// UseEMA makes Get return the EMA copy of UNet weights
	// ("model_ema.<name without 'model.' and dots>") when the file has them;
	// Open fails when it is set and the file has none.
	UseEMA bool
}

// Checkpoint is an opened model in any supported layout, exposed as a
// tensor.Source in original (ldm) names.
type Checkpoint struct {
	Path   string // what was opened (file or folder)
	Layout string // "safetensors", "ckpt" or "diffusers"
	Family string // "sd1", "sd2", "sdxl" or "unknown"; see guessFamily

	// Diffusers is set for the diffusers layout (configs, tokenizer folder).
	Diffusers *Diffusers
	// Metadata is the safetensors __metadata__ map (nil otherwise).
	Metadata map[string]string

	src    closingSource
	names  []string
	hasEMA bool
	useEMA bool
}

// Open opens a checkpoint: a single-file .safetensors, a PyTorch zip
// (.ckpt, .pth, .bin), or a diffusers folder (the folder or its
// model_index.json). The format is recognised from the content, not the
// file name. Close releases the file mappings.
func Open(path string, opts Options) (*Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Path: path}
	switch {
	case st.IsDir() || filepath.Base(path) == "model_index.json":
		d, err := OpenDiffusers(path)
		if err != nil {
			return nil, err
		}
		c.src, c.Layout, c.Diffusers = d, "diffusers", d
	default:
		kind, err := sniffFile(path)
		if err != nil {
			return nil, err
		}
		switch kind {
		case kindSafetensors:
			s, err := OpenSafetensors(path)
			if err != nil {
				return nil, err
			}
			c.src, c.Layout, c.Metadata = s, "safetensors", s.Metadata()
		case kindZip:
			z, err := OpenTorchZip(path)
			if err != nil {
				return nil, err
			}
			c.src, c.Layout = z, "ckpt"
		}
	}
	c.names = c.src.Names()
	for _, n := range c.names {
		if strings.HasPrefix(n, "model_ema.") && n != "model_ema.decay" && n != "model_ema.num_updates" {
			c.hasEMA = true
			break
		}
	}
	if opts.UseEMA && !c.hasEMA {
		c.src.Close()
		return nil, fmt.Errorf("%s: EMA weights were requested but the checkpoint has no model_ema.* tensors", path)
	}
	c.useEMA = opts.UseEMA
	c.Family = guessFamily(c.src)
	return c, nil
}

// EMAName returns the name under which ldm checkpoints store the EMA copy of
// a UNet weight: "model.diffusion_model.input_blocks.0.0.weight" ->
// "model_ema.diffusion_modelinput_blocks00weight".
func EMAName(name string) string {
	return "model_ema." + strings.ReplaceAll(strings.TrimPrefix(name, "model."), ".", "")
}

// Names lists every tensor name in ldm form, sorted (EMA copies included).
func (c *Checkpoint) Names() []string { return append([]string(nil), c.names...) }

// Get returns a tensor by ldm name. With Options.UseEMA, UNet weights come
// from their EMA copies where present. Repeated calls are cheap and return
// the same tensor; treat it as read-only and do not use it after Close.
func (c *Checkpoint) Get(name string) (*tensor.Tensor, bool) {
	if c.useEMA && strings.HasPrefix(name, PrefixUNet) {
		if t, ok := c.src.Get(EMAName(name)); ok {
			return t, true
		}
	}
	return c.src.Get(name)
}

// Stored reports a tensor's stored dtype ("F16", "I64", ...) and ldm shape.
func (c *Checkpoint) Stored(name string) (string, []int, bool) {
	if c.useEMA && strings.HasPrefix(name, PrefixUNet) {
		if dt, s, ok := c.src.Stored(EMAName(name)); ok {
			return dt, s, true
		}
	}
	return c.src.Stored(name)
}

// HasEMA reports whether the checkpoint carries model_ema.* weight copies.
func (c *Checkpoint) HasEMA() bool { return c.hasEMA }

// Close releases the checkpoint's files.
func (c *Checkpoint) Close() error { return c.src.Close() }

// guessFamily tells SD 1.x, 2.x and XL apart from names and shapes:
// SDXL has label_emb or conditioner.embedders; otherwise the UNet's
// cross-attention context width decides (768: sd1, 1024: sd2); for other
// widths (small test models) the text encoder's naming decides
// (transformers CLIP: sd1, OpenCLIP: sd2).
func guessFamily(src StoredSource) string {
	names := src.Names()
	ctx := 0
	clip, openclip := false, false
	for _, n := range names {
		switch {
		case strings.HasPrefix(n, PrefixUNet+"label_emb.") || strings.HasPrefix(n, "conditioner.embedders."):
			return "sdxl"
		case ctx == 0 && strings.HasPrefix(n, PrefixUNet) && strings.HasSuffix(n, ".attn2.to_k.weight"):
			if _, shape, ok := src.Stored(n); ok && len(shape) == 2 {
				ctx = shape[1]
			}
		case strings.HasPrefix(n, PrefixCLIP):
			clip = true
		case strings.HasPrefix(n, "cond_stage_model.model."):
			openclip = true
		}
	}
	switch {
	case ctx == 768:
		return "sd1"
	case ctx == 1024:
		return "sd2"
	case clip:
		return "sd1"
	case openclip:
		return "sd2"
	}
	return "unknown"
}

// Info summarises a checkpoint for display (gosd inspect).
type Info struct {
	Path    string
	Layout  string // "safetensors", "ckpt", "diffusers"
	Family  string // "sd1", "sd2", "sdxl", "unknown"
	DType   string // dominant weight dtype by bytes: "F32", "F16", "BF16"
	Tensors int    // number of tensors
	Params  int64  // elements in floating-point tensors
	Bytes   int64  // stored bytes of all tensors
	// InferenceBytes is what a text-to-image run loads of Bytes: the UNet,
	// the text encoders and the VAE decoder, without EMA copies, the VAE
	// encoder (and quant_conv) and top-level buffers such as the schedule.
	InferenceBytes int64
	HasEMA         bool           // model_ema.* copies present
	Parts          map[string]int // tensor count per part: "unet", "vae", "text_encoder", "ema", "other"
	DTypes         map[string]int // tensor count per stored dtype
	Metadata       map[string]string
}

// Describe summarises c.
func Describe(c *Checkpoint) Info {
	info := Info{Path: c.Path, Layout: c.Layout, Family: c.Family, Tensors: len(c.names), HasEMA: c.hasEMA,
		Parts: map[string]int{}, DTypes: map[string]int{}, Metadata: c.Metadata}
	byDType := map[string]int64{}
	for _, n := range c.names {
		dt, shape, ok := c.src.Stored(n)
		if !ok {
			continue
		}
		numel := int64(tensor.Numel(shape))
		bytes := numel * stItemSize[dt]
		info.DTypes[dt]++
		info.Bytes += bytes
		if dt == "F32" || dt == "F16" || dt == "BF16" || dt == "F64" {
			info.Params += numel
			byDType[dt] += bytes
		}
		switch {
		case strings.HasPrefix(n, PrefixUNet):
			info.Parts["unet"]++
			info.InferenceBytes += bytes
		case strings.HasPrefix(n, PrefixVAE):
			info.Parts["vae"]++
			if !strings.HasPrefix(n, PrefixVAE+"encoder.") && !strings.HasPrefix(n, PrefixVAE+"quant_conv.") {
				info.InferenceBytes += bytes
			}
		case strings.HasPrefix(n, "cond_stage_model.") || strings.HasPrefix(n, "conditioner."):
			info.Parts["text_encoder"]++
			info.InferenceBytes += bytes
		case strings.HasPrefix(n, "model_ema."):
			info.Parts["ema"]++
		default:
			info.Parts["other"]++
		}
	}
	dts := make([]string, 0, len(byDType))
	for dt := range byDType {
		dts = append(dts, dt)
	}
	sort.Strings(dts)
	for _, dt := range dts {
		if info.DType == "" || byDType[dt] > byDType[info.DType] {
			info.DType = dt
		}
	}
	return info
}
