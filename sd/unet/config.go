package unet

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gosd/gosd/sd/tensor"
)

// Prefix is the name prefix of the UNet's tensors in an original (ldm)
// single-file checkpoint.
const Prefix = "model.diffusion_model."

// Config describes an ldm UNetModel in the SD 1.x / 2.x layout.
type Config struct {
	InChannels    int   // latent channels in (4)
	OutChannels   int   // channels out (4)
	ModelChannels int   // width of the first level (320); the time embedding is 4x this
	ChannelMult   []int // width multiplier per level ([1 2 4 4])
	NumResBlocks  int   // residual blocks per level on the way down (2); one more on the way up
	// Attention[i] says whether level i has a spatial transformer after each
	// residual block. The middle block always has one.
	Attention []bool
	// Depth[i] is the number of transformer blocks in level i's spatial
	// transformers (1 for SD 1.x and 2.x); MidDepth is the middle block's.
	Depth    []int
	MidDepth int
	// ContextDim is the width of the cross-attention context (768 for SD 1.x).
	ContextDim int
	// Heads[i] is the number of attention heads at level i (SD 1.x: 8 at
	// every level; SD 2.x: width/64). MidHeads is the middle block's.
	Heads    []int
	MidHeads int
	// LinearProj selects linear proj_in/proj_out in the spatial transformers
	// (SD 2.x, use_linear_in_transformer) instead of 1x1 convolutions (SD 1.x).
	LinearProj bool
	// Groups is the number of GroupNorm groups (32).
	Groups int
	// ADMChannels is the width of the extra conditioning vector y that
	// label_emb (linear ADMChannels -> 4M, SiLU, linear 4M -> 4M) adds to
	// the time embedding; 0 for none. SDXL: 2816 = the pooled text
	// embedding (1280) + 6 size/crop numbers x 256 Fourier features.
	ADMChannels int
}

// SD15Config returns the configuration of Stable Diffusion 1.x.
func SD15Config() *Config {
	return &Config{
		InChannels: 4, OutChannels: 4, ModelChannels: 320, ChannelMult: []int{1, 2, 4, 4}, NumResBlocks: 2,
		Attention: []bool{true, true, true, false}, Depth: []int{1, 1, 1, 1}, MidDepth: 1, ContextDim: 768,
		Heads: []int{8, 8, 8, 8}, MidHeads: 8, Groups: 32,
	}
}

// Levels is the number of resolution levels.
func (c *Config) Levels() int { return len(c.ChannelMult) }

// Validate reports the first inconsistency in c.
func (c *Config) Validate() error {
	n := c.Levels()
	switch {
	case c.InChannels < 1 || c.OutChannels < 1:
		return fmt.Errorf("unet config: in/out channels %d/%d", c.InChannels, c.OutChannels)
	case c.ModelChannels < 2 || c.ModelChannels%2 != 0:
		return fmt.Errorf("unet config: model channels %d must be even and positive", c.ModelChannels)
	case n == 0:
		return errors.New("unet config: no channel multipliers")
	case len(c.Attention) != n || len(c.Depth) != n || len(c.Heads) != n:
		return fmt.Errorf("unet config: %d levels but %d attention flags, %d depths, %d head counts",
			n, len(c.Attention), len(c.Depth), len(c.Heads))
	case c.NumResBlocks < 1:
		return fmt.Errorf("unet config: %d residual blocks per level", c.NumResBlocks)
	case c.Groups < 1:
		return fmt.Errorf("unet config: %d groups", c.Groups)
	case c.ContextDim < 1:
		return fmt.Errorf("unet config: context dim %d", c.ContextDim)
	case c.ADMChannels < 0:
		return fmt.Errorf("unet config: ADM channels %d", c.ADMChannels)
	case c.MidDepth < 1 || c.MidHeads < 1:
		return fmt.Errorf("unet config: middle block depth %d, heads %d", c.MidDepth, c.MidHeads)
	}
	if c.ModelChannels%c.Groups != 0 {
		return fmt.Errorf("unet config: model channels %d not divisible by %d groups", c.ModelChannels, c.Groups)
	}
	for i, m := range c.ChannelMult {
		w := m * c.ModelChannels
		if m < 1 || w%c.Groups != 0 {
			return fmt.Errorf("unet config: level %d width %d not divisible by %d groups", i, w, c.Groups)
		}
		if c.Attention[i] && (c.Depth[i] < 1 || c.Heads[i] < 1 || w%c.Heads[i] != 0) {
			return fmt.Errorf("unet config: level %d width %d with depth %d and %d heads", i, w, c.Depth[i], c.Heads[i])
		}
	}
	if mid := c.ChannelMult[n-1] * c.ModelChannels; mid%c.MidHeads != 0 {
		return fmt.Errorf("unet config: middle width %d not divisible by %d heads", mid, c.MidHeads)
	}
	return nil
}

// diffusersConfig is the subset of a diffusers UNet2DConditionModel
// config.json that describes an SD 1.x / 2.x UNet.
type diffusersConfig struct {
	ClassName          string          `json:"_class_name"`
	InChannels         int             `json:"in_channels"`
	OutChannels        int             `json:"out_channels"`
	BlockOutChannels   []int           `json:"block_out_channels"`
	LayersPerBlock     int             `json:"layers_per_block"`
	DownBlockTypes     []string        `json:"down_block_types"`
	CrossAttentionDim  int             `json:"cross_attention_dim"`
	AttentionHeadDim   json.RawMessage `json:"attention_head_dim"`
	NumAttentionHeads  json.RawMessage `json:"num_attention_heads"`
	TransformerLayers  json.RawMessage `json:"transformer_layers_per_block"`
	UseLinearProj      bool            `json:"use_linear_projection"`
	NormNumGroups      int             `json:"norm_num_groups"`
	AdditionEmbedType  *string         `json:"addition_embed_type"`
	ClassEmbedType     *string         `json:"class_embed_type"`
	NumClassEmbeds     *int            `json:"num_class_embeds"`
	FlipSinToCos       *bool           `json:"flip_sin_to_cos"`
	FreqShift          *int            `json:"freq_shift"`
	TimeEmbeddingType  *string         `json:"time_embedding_type"`
	AdditionTimeDim    int             `json:"addition_time_embed_dim"`
	ProjClassInputDim  int             `json:"projection_class_embeddings_input_dim"`
	MidBlockType       *string         `json:"mid_block_type"`
	OnlyCrossAttention json.RawMessage `json:"only_cross_attention"`
}

// perLevel decodes a JSON int or list of ints into n values; null or absent gives nil.
func perLevel(raw json.RawMessage, n int, what string) ([]int, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		out := make([]int, n)
		for i := range out {
			out[i] = one
		}
		return out, nil
	}
	var list []int
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("unet config: %s is neither a number nor a list of numbers: %s", what, s)
	}
	if len(list) != n {
		return nil, fmt.Errorf("unet config: %s has %d entries for %d levels", what, len(list), n)
	}
	return list, nil
}

// ParseConfig reads a diffusers UNet2DConditionModel config.json.
//
// Diffusers' SD 1.x/2.x configs store the number of attention heads in
// "attention_head_dim" (8 for SD 1.x means 8 heads of width 40 at level 0);
// "num_attention_heads", when set, takes precedence. SDXL's
// addition_embed_type "text_time" sets ADMChannels from
// projection_class_embeddings_input_dim; other additions (class
// embeddings, image embeddings) are rejected.
func ParseConfig(data []byte) (*Config, error) {
	var d diffusersConfig
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, fmt.Errorf("unet config: %w", err)
	}
	if d.ClassName != "" && d.ClassName != "UNet2DConditionModel" {
		return nil, fmt.Errorf("unet config: class %q is not UNet2DConditionModel", d.ClassName)
	}
	adm := 0
	if d.AdditionEmbedType != nil && *d.AdditionEmbedType != "" {
		if *d.AdditionEmbedType != "text_time" || d.ProjClassInputDim <= 0 {
			return nil, fmt.Errorf("unet config: addition_embed_type %q (projection input %d) not supported; only SDXL's text_time",
				*d.AdditionEmbedType, d.ProjClassInputDim)
		}
		adm = d.ProjClassInputDim
	}
	if (d.ClassEmbedType != nil && *d.ClassEmbedType != "") || (d.NumClassEmbeds != nil && *d.NumClassEmbeds > 0) {
		return nil, errors.New("unet config: class embeddings (upscalers) are not supported")
	}
	if d.FlipSinToCos != nil && !*d.FlipSinToCos || d.FreqShift != nil && *d.FreqShift != 0 {
		return nil, errors.New("unet config: only flip_sin_to_cos=true, freq_shift=0 time embeddings are supported")
	}
	if d.TimeEmbeddingType != nil && *d.TimeEmbeddingType != "positional" {
		return nil, fmt.Errorf("unet config: time_embedding_type %q not supported", *d.TimeEmbeddingType)
	}
	if d.MidBlockType != nil && *d.MidBlockType != "UNetMidBlock2DCrossAttn" {
		return nil, fmt.Errorf("unet config: mid_block_type %q not supported", *d.MidBlockType)
	}
	n := len(d.BlockOutChannels)
	if n == 0 || len(d.DownBlockTypes) != n {
		return nil, fmt.Errorf("unet config: %d block_out_channels and %d down_block_types", n, len(d.DownBlockTypes))
	}
	c := &Config{
		InChannels: d.InChannels, OutChannels: d.OutChannels, ModelChannels: d.BlockOutChannels[0],
		NumResBlocks: d.LayersPerBlock, ContextDim: d.CrossAttentionDim, LinearProj: d.UseLinearProj,
		Groups: d.NormNumGroups, ADMChannels: adm,
	}
	if c.Groups == 0 {
		c.Groups = 32
	}
	for i, w := range d.BlockOutChannels {
		if c.ModelChannels <= 0 || w%c.ModelChannels != 0 {
			return nil, fmt.Errorf("unet config: block_out_channels[%d]=%d is not a multiple of %d", i, w, c.ModelChannels)
		}
		c.ChannelMult = append(c.ChannelMult, w/c.ModelChannels)
		switch t := d.DownBlockTypes[i]; t {
		case "CrossAttnDownBlock2D":
			c.Attention = append(c.Attention, true)
		case "DownBlock2D":
			c.Attention = append(c.Attention, false)
		default:
			return nil, fmt.Errorf("unet config: down block type %q not supported", t)
		}
	}
	heads, err := perLevel(d.NumAttentionHeads, n, "num_attention_heads")
	if err != nil {
		return nil, err
	}
	if heads == nil {
		if heads, err = perLevel(d.AttentionHeadDim, n, "attention_head_dim"); err != nil {
			return nil, err
		}
	}
	if heads == nil {
		heads = []int{8, 8, 8, 8}[:min(n, 4)]
		for len(heads) < n {
			heads = append(heads, 8)
		}
	}
	c.Heads, c.MidHeads = heads, heads[n-1]
	depth, err := perLevel(d.TransformerLayers, n, "transformer_layers_per_block")
	if err != nil {
		return nil, err
	}
	if depth == nil {
		depth = make([]int, n)
		for i := range depth {
			depth[i] = 1
		}
	}
	c.Depth, c.MidDepth = depth, depth[n-1]
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// LoadConfigFile reads a diffusers unet/config.json from disk.
func LoadConfigFile(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseConfig(b)
}

// InferConfig derives a Config from the names and shapes of the tensors
// under Prefix (or no prefix, when src holds a bare UNet).
//
// Head counts cannot be read from shapes: a context width of 1024 (the
// OpenCLIP-H text encoder of SD 2.x) or an ADM input (label_emb, SDXL)
// gives heads of 64 channels, any other width 8 heads at every level
// (SD 1.x). Pass a Config to Load when a checkpoint differs.
func InferConfig(src tensor.Source) (*Config, error) {
	p := findPrefix(src)
	get := func(name string) []int {
		if t, ok := src.Get(p + name); ok {
			return t.Shape
		}
		return nil
	}
	has := func(name string) bool { return get(name) != nil }
	in0 := get("input_blocks.0.0.weight")
	out2 := get("out.2.weight")
	if len(in0) != 4 || len(out2) != 4 {
		return nil, errors.New("unet: checkpoint has no input_blocks.0.0.weight / out.2.weight of rank 4")
	}
	c := &Config{InChannels: in0[1], ModelChannels: in0[0], OutChannels: out2[0], Groups: 32}
	if w := get("label_emb.0.0.weight"); w != nil {
		if len(w) != 2 || !has("label_emb.0.2.weight") {
			return nil, errors.New("unet: label_emb.0.0.weight is not a linear layer followed by label_emb.0.2")
		}
		c.ADMChannels = w[1]
	}
	// Walk the input blocks: runs of residual blocks separated by downsamplers.
	var resPerLevel []int
	runs := 0
	var ctxDim int
	for i := 1; ; i++ {
		b := "input_blocks." + strconv.Itoa(i) + "."
		if has(b + "0.op.weight") {
			resPerLevel = append(resPerLevel, runs)
			runs = 0
			continue
		}
		w := get(b + "0.out_layers.3.weight")
		if w == nil {
			break
		}
		if runs == 0 {
			if w[0]%c.ModelChannels != 0 {
				return nil, fmt.Errorf("unet: input block %d width %d is not a multiple of %d", i, w[0], c.ModelChannels)
			}
			c.ChannelMult = append(c.ChannelMult, w[0]/c.ModelChannels)
			att := has(b + "1.transformer_blocks.0.attn1.to_q.weight")
			c.Attention = append(c.Attention, att)
			depth := 0
			if att {
				for has(b + "1.transformer_blocks." + strconv.Itoa(depth) + ".attn1.to_q.weight") {
					depth++
				}
				if k := get(b + "1.transformer_blocks.0.attn2.to_k.weight"); len(k) == 2 {
					ctxDim = k[1]
				}
				if pin := get(b + "1.proj_in.weight"); len(pin) == 2 {
					c.LinearProj = true
				}
			}
			c.Depth = append(c.Depth, depth)
		}
		runs++
	}
	resPerLevel = append(resPerLevel, runs)
	if len(c.ChannelMult) == 0 || len(resPerLevel) != len(c.ChannelMult) {
		return nil, errors.New("unet: cannot read the level structure from input_blocks")
	}
	c.NumResBlocks = resPerLevel[0]
	for i, r := range resPerLevel {
		if r != c.NumResBlocks {
			return nil, fmt.Errorf("unet: level %d has %d residual blocks, level 0 has %d", i, r, c.NumResBlocks)
		}
	}
	for has("middle_block.1.transformer_blocks." + strconv.Itoa(c.MidDepth) + ".attn1.to_q.weight") {
		c.MidDepth++
	}
	if k := get("middle_block.1.transformer_blocks.0.attn2.to_k.weight"); len(k) == 2 {
		ctxDim = k[1]
	}
	if pin := get("middle_block.1.proj_in.weight"); len(pin) == 2 {
		c.LinearProj = true
	}
	c.ContextDim = ctxDim
	headsFor := func(width int) int {
		if (ctxDim == 1024 || c.ADMChannels > 0) && width%64 == 0 {
			return width / 64
		}
		return 8
	}
	for i, m := range c.ChannelMult {
		c.Heads = append(c.Heads, headsFor(m*c.ModelChannels))
		if !c.Attention[i] {
			c.Depth[i] = 1
		}
	}
	c.MidHeads = headsFor(c.ChannelMult[len(c.ChannelMult)-1] * c.ModelChannels)
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("unet: inferred %w", err)
	}
	return c, nil
}

// findPrefix returns Prefix when src holds ldm names, "" for a bare UNet.
func findPrefix(src tensor.Source) string {
	if _, ok := src.Get(Prefix + "input_blocks.0.0.weight"); ok {
		return Prefix
	}
	if _, ok := src.Get("input_blocks.0.0.weight"); ok {
		return ""
	}
	return Prefix
}
