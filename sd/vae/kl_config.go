package vae

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/gosd/gosd/sd/tensor"
)

// KLPrefix is the name prefix of the autoencoder's tensors in an original
// (ldm) single-file checkpoint.
const KLPrefix = "first_stage_model."

// KLScalingSD1 is the latent scaling factor of the SD 1.x/2.x autoencoder.
const KLScalingSD1 = 0.18215

// KLConfig describes an ldm AutoencoderKL (SD 1.x/2.x "kl-f8").
type KLConfig struct {
	InChannels   int   // image channels in (3)
	OutChannels  int   // image channels out (3)
	Ch           int   // width of the first level (128)
	ChMult       []int // width multiplier per level ([1 2 4 4]); the image is downscaled 2^(len-1) per side
	NumResBlocks int   // residual blocks per encoder level (2); the decoder has one more
	ZChannels    int   // latent channels (4)
	Groups       int   // GroupNorm groups (32)
	// ScalingFactor multiplies the encoder's latents before diffusion
	// (0.18215 for SD 1.x/2.x). The model itself does not apply it.
	ScalingFactor float32
}

// KLSD15Config returns the configuration of the SD 1.x/2.x autoencoder.
func KLSD15Config() *KLConfig {
	return &KLConfig{InChannels: 3, OutChannels: 3, Ch: 128, ChMult: []int{1, 2, 4, 4}, NumResBlocks: 2,
		ZChannels: 4, Groups: 32, ScalingFactor: KLScalingSD1}
}

// Factor is the spatial downscaling factor between image and latent (8).
func (c *KLConfig) Factor() int { return 1 << (len(c.ChMult) - 1) }

// Validate reports the first inconsistency in c.
func (c *KLConfig) Validate() error {
	switch {
	case c.InChannels < 1 || c.OutChannels < 1 || c.ZChannels < 1:
		return fmt.Errorf("vae config: channels in %d, out %d, z %d", c.InChannels, c.OutChannels, c.ZChannels)
	case c.Ch < 1 || len(c.ChMult) == 0 || len(c.ChMult) > 8:
		return fmt.Errorf("vae config: ch %d with %d levels", c.Ch, len(c.ChMult))
	case c.NumResBlocks < 1:
		return fmt.Errorf("vae config: %d residual blocks per level", c.NumResBlocks)
	case c.Groups < 1:
		return fmt.Errorf("vae config: %d groups", c.Groups)
	case !(c.ScalingFactor > 0):
		return fmt.Errorf("vae config: scaling factor %g", c.ScalingFactor)
	}
	for i, m := range c.ChMult {
		if m < 1 || (m*c.Ch)%c.Groups != 0 {
			return fmt.Errorf("vae config: level %d width %d not divisible by %d groups", i, m*c.Ch, c.Groups)
		}
	}
	if c.Ch%c.Groups != 0 {
		return fmt.Errorf("vae config: width %d not divisible by %d groups", c.Ch, c.Groups)
	}
	return nil
}

// klDiffusers is the subset of a diffusers AutoencoderKL config.json.
type klDiffusers struct {
	ClassName        string   `json:"_class_name"`
	InChannels       int      `json:"in_channels"`
	OutChannels      int      `json:"out_channels"`
	BlockOutChannels []int    `json:"block_out_channels"`
	DownBlockTypes   []string `json:"down_block_types"`
	LayersPerBlock   int      `json:"layers_per_block"`
	LatentChannels   int      `json:"latent_channels"`
	NormNumGroups    int      `json:"norm_num_groups"`
	ScalingFactor    *float64 `json:"scaling_factor"`
	ShiftFactor      *float64 `json:"shift_factor"`
	UseQuantConv     *bool    `json:"use_quant_conv"`
	UsePostQuantConv *bool    `json:"use_post_quant_conv"`
	MidBlockAddAttn  *bool    `json:"mid_block_add_attention"`
}

// ParseKLConfig reads a diffusers AutoencoderKL config.json. A missing
// scaling_factor means the SD 1.x value 0.18215. Variants without
// quant convolutions or mid-block attention, or with a shift factor (SD3,
// FLUX), are rejected.
func ParseKLConfig(data []byte) (*KLConfig, error) {
	var d klDiffusers
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("vae config: %w", err)
	}
	if d.ClassName != "" && d.ClassName != "AutoencoderKL" {
		return nil, fmt.Errorf("vae config: class %q is not AutoencoderKL", d.ClassName)
	}
	if d.ShiftFactor != nil && *d.ShiftFactor != 0 || d.UseQuantConv != nil && !*d.UseQuantConv ||
		d.UsePostQuantConv != nil && !*d.UsePostQuantConv || d.MidBlockAddAttn != nil && !*d.MidBlockAddAttn {
		return nil, errors.New("vae config: shift factor, missing quant convs or mid attention are not supported")
	}
	n := len(d.BlockOutChannels)
	if n == 0 {
		return nil, errors.New("vae config: no block_out_channels")
	}
	c := &KLConfig{InChannels: d.InChannels, OutChannels: d.OutChannels, Ch: d.BlockOutChannels[0],
		NumResBlocks: d.LayersPerBlock, ZChannels: d.LatentChannels, Groups: d.NormNumGroups, ScalingFactor: KLScalingSD1}
	if c.Groups == 0 {
		c.Groups = 32
	}
	if d.ScalingFactor != nil {
		c.ScalingFactor = float32(*d.ScalingFactor)
	}
	for i, w := range d.BlockOutChannels {
		if c.Ch <= 0 || w%c.Ch != 0 {
			return nil, fmt.Errorf("vae config: block_out_channels[%d]=%d is not a multiple of %d", i, w, c.Ch)
		}
		c.ChMult = append(c.ChMult, w/c.Ch)
	}
	for _, t := range d.DownBlockTypes {
		if t != "DownEncoderBlock2D" {
			return nil, fmt.Errorf("vae config: down block type %q not supported", t)
		}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadKLConfigFile reads a diffusers vae/config.json from disk.
func LoadKLConfigFile(path string) (*KLConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseKLConfig(b)
}

// InferKLConfig derives a KLConfig from the decoder's tensor names and
// shapes under KLPrefix (or no prefix, for a bare VAE file). The scaling
// factor cannot be read from weights and is set to 0.18215.
func InferKLConfig(src tensor.Source) (*KLConfig, error) {
	p := klFindPrefix(src)
	get := func(name string) []int {
		if t, ok := src.Get(p + name); ok {
			return t.Shape
		}
		return nil
	}
	out := get("decoder.conv_out.weight") // [3, ch, 3, 3]
	in := get("decoder.conv_in.weight")   // [ch*mult[-1], z, 3, 3]
	if len(out) != 4 || len(in) != 4 {
		return nil, errors.New("vae: checkpoint has no decoder.conv_in.weight / decoder.conv_out.weight of rank 4")
	}
	c := &KLConfig{InChannels: 3, OutChannels: out[0], Ch: out[1], ZChannels: in[1], Groups: 32, ScalingFactor: KLScalingSD1}
	if e := get("encoder.conv_in.weight"); len(e) == 4 {
		c.InChannels = e[1]
	}
	for i := 0; ; i++ {
		w := get("decoder.up." + strconv.Itoa(i) + ".block.0.conv2.weight")
		if w == nil {
			break
		}
		if c.Ch <= 0 || w[0]%c.Ch != 0 {
			return nil, fmt.Errorf("vae: decoder level %d width %d is not a multiple of %d", i, w[0], c.Ch)
		}
		c.ChMult = append(c.ChMult, w[0]/c.Ch)
	}
	for get("decoder.up.0.block."+strconv.Itoa(c.NumResBlocks+1)+".conv1.weight") != nil {
		c.NumResBlocks++
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("vae: inferred %w", err)
	}
	return c, nil
}

// klFindPrefix returns KLPrefix when src holds ldm names, "" for a bare VAE.
func klFindPrefix(src tensor.Source) string {
	if _, ok := src.Get(KLPrefix + "decoder.conv_in.weight"); ok {
		return KLPrefix
	}
	if _, ok := src.Get("decoder.conv_in.weight"); ok {
		return ""
	}
	return KLPrefix
}
