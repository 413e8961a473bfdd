// Package unet implements the Stable Diffusion 1.x / 2.x denoising UNet
// (ldm's openaimodel.UNetModel) on a tensor.Backend.
//
// Weights load from the original single-file (ldm) names,
// "model.diffusion_model.input_blocks.0.0.weight" and so on; the model is
// configured from a diffusers config.json (ParseConfig) or from the
// checkpoint's own names and shapes (InferConfig).
package unet

import (
	"errors"
	"fmt"
	"math"

	"github.com/gosd/gosd/sd/nn"
	"github.com/gosd/gosd/sd/tensor"
)

// Block is one entry of the UNet's input or output block lists: a residual
// block optionally followed by a spatial transformer and a resampler, or
// (in the input list) a lone downsampler or the stem convolution.
type Block struct {
	Stem  *nn.Conv2D // input_blocks.0.0 only
	Res   *ResBlock
	Attn  *SpatialTransformer
	Down  *Downsample
	Up    *Upsample
	Width int // output channels of the block
}

// UNet is an SD 1.x / 2.x UNet with its weights.
type UNet struct {
	Config *Config
	// TimeEmbed1 and TimeEmbed2 are time_embed.0 and time_embed.2:
	// linear [ModelChannels -> 4M], SiLU, linear [4M -> 4M].
	TimeEmbed1, TimeEmbed2 *nn.Linear
	// LabelEmbed1 and LabelEmbed2 are label_emb.0.0 and label_emb.0.2
	// (linear [ADMChannels -> 4M], SiLU, linear [4M -> 4M]); nil without ADM.
	LabelEmbed1, LabelEmbed2 *nn.Linear
	Input                    []*Block
	Mid1                     *ResBlock
	MidAttn                  *SpatialTransformer
	Mid2                     *ResBlock
	Output                   []*Block
	OutNorm                  *nn.GroupNorm // out.0, followed by SiLU
	OutConv                  *nn.Conv2D    // out.2
}

// Load builds a UNet from src. Names are read under Prefix, or without a
// prefix when src holds a bare UNet. With cfg nil the configuration is
// inferred from the tensors (InferConfig). Missing or misshapen tensors and
// tensors under the prefix that the configuration does not use are errors.
func Load(src tensor.Source, cfg *Config) (*UNet, error) {
	if cfg == nil {
		var err error
		if cfg, err = InferConfig(src); err != nil {
			return nil, err
		}
	} else if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prefix := findPrefix(src)
	l := nn.NewLoader(src, prefix)
	m := cfg.ModelChannels
	emb := 4 * m
	u := &UNet{
		Config:     cfg,
		TimeEmbed1: l.Linear("time_embed.0", m, emb, true),
		TimeEmbed2: l.Linear("time_embed.2", emb, emb, true),
	}
	if cfg.ADMChannels > 0 {
		u.LabelEmbed1 = l.Linear("label_emb.0.0", cfg.ADMChannels, emb, true)
		u.LabelEmbed2 = l.Linear("label_emb.0.2", emb, emb, true)
	}
	g := cfg.Groups
	u.Input = append(u.Input, &Block{Stem: l.Conv2D("input_blocks.0.0", cfg.InChannels, m, 3, 1, 1, true), Width: m})
	widths := []int{m}
	ch := m
	for level, mult := range cfg.ChannelMult {
		for r := 0; r < cfg.NumResBlocks; r++ {
			bl := l.Subf("input_blocks.%d", len(u.Input))
			out := mult * m
			b := &Block{Res: loadResBlock(bl.Sub("0"), ch, out, emb, g), Width: out}
			ch = out
			if cfg.Attention[level] {
				b.Attn = loadSpatialTransformer(bl.Sub("1"), ch, cfg.ContextDim, cfg.Heads[level], cfg.Depth[level], g, cfg.LinearProj)
			}
			u.Input = append(u.Input, b)
			widths = append(widths, ch)
		}
		if level != cfg.Levels()-1 {
			bl := l.Subf("input_blocks.%d", len(u.Input))
			u.Input = append(u.Input, &Block{Down: &Downsample{Op: bl.Conv2D("0.op", ch, ch, 3, 2, 1, true)}, Width: ch})
			widths = append(widths, ch)
		}
	}
	u.Mid1 = loadResBlock(l.Sub("middle_block.0"), ch, ch, emb, g)
	u.MidAttn = loadSpatialTransformer(l.Sub("middle_block.1"), ch, cfg.ContextDim, cfg.MidHeads, cfg.MidDepth, g, cfg.LinearProj)
	u.Mid2 = loadResBlock(l.Sub("middle_block.2"), ch, ch, emb, g)
	for level := cfg.Levels() - 1; level >= 0; level-- {
		for i := 0; i <= cfg.NumResBlocks; i++ {
			skip := widths[len(widths)-1]
			widths = widths[:len(widths)-1]
			bl := l.Subf("output_blocks.%d", len(u.Output))
			out := cfg.ChannelMult[level] * m
			b := &Block{Res: loadResBlock(bl.Sub("0"), ch+skip, out, emb, g), Width: out}
			ch = out
			layer := 1
			if cfg.Attention[level] {
				b.Attn = loadSpatialTransformer(bl.Sub("1"), ch, cfg.ContextDim, cfg.Heads[level], cfg.Depth[level], g, cfg.LinearProj)
				layer = 2
			}
			if level > 0 && i == cfg.NumResBlocks {
				b.Up = &Upsample{Conv: bl.Conv2D(fmt.Sprintf("%d.conv", layer), ch, ch, 3, 1, 1, true)}
			}
			u.Output = append(u.Output, b)
		}
	}
	u.OutNorm = l.GroupNorm("out.0", m, g, resEps)
	u.OutConv = l.Conv2D("out.2", m, cfg.OutChannels, 3, 1, 1, true)
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("unet: %w", err)
	}
	if unused := l.Unused(prefix); prefix != "" && len(unused) > 0 {
		return nil, fmt.Errorf("unet: %d checkpoint tensors do not fit the configuration, e.g. %q", len(unused), unused[0])
	}
	return u, nil
}

// TimestepEmbedding returns the sinusoidal embedding [len(t), dim] of ldm's
// timestep_embedding (and diffusers' with flip_sin_to_cos=true,
// freq_shift=0): with half = dim/2 and f_i = exp(-ln(10000) * i / half),
// row b is [cos(t_b f_0) ... cos(t_b f_{half-1}), sin(t_b f_0) ...]. The
// frequencies and the products t_b f_i are rounded to float32 as PyTorch
// computes them, so the phases at t = 999 match PyTorch to the last bit.
// dim must be even.
func TimestepEmbedding(t []float32, dim int) *tensor.Tensor {
	half := dim / 2
	y := tensor.New(len(t), dim)
	for i := 0; i < half; i++ {
		e := float32(-math.Log(10000)) * float32(i) / float32(half)
		f := float32(math.Exp(float64(e)))
		for b, tb := range t {
			arg := float64(tb * f)
			y.F32[b*dim+i] = float32(math.Cos(arg))
			y.F32[b*dim+half+i] = float32(math.Sin(arg))
		}
	}
	return y
}

// Forward predicts the noise (or v) for a batch of latents.
//
// x: [B, InChannels, H, W] f32 latents (already scaled by 1/sqrt(sigma²+1)
// where the sampler needs it), t: B timesteps (fractional allowed),
// ctx: [B, L, ContextDim] f32 text embeddings -> [B, OutChannels, H, W].
// Any H, W >= 1 work: where a downsampler halves an odd size (rounding
// up), the matching upsampler produces exactly the skip connection's size.
//
// Intermediates come from and go back to the activation pool
// (tensor.Empty, tensor.Release); the result is the caller's to release.
func (u *UNet) Forward(be tensor.Backend, x *tensor.Tensor, t []float32, ctx *tensor.Tensor) (out *tensor.Tensor, err error) {
	return u.ForwardADM(be, x, t, ctx, nil)
}

// ForwardADM is Forward with the extra conditioning vector of an ADM UNet
// (SDXL): y [B, ADMChannels] f32, passed through label_emb and added to the
// time embedding. y must be nil exactly when Config.ADMChannels is 0.
func (u *UNet) ForwardADM(be tensor.Backend, x *tensor.Tensor, t []float32, ctx, y *tensor.Tensor) (out *tensor.Tensor, err error) {
	cfg := u.Config
	switch {
	case cfg.ADMChannels == 0 && y != nil:
		return nil, errors.New("unet: a conditioning vector y was given to a UNet without label_emb")
	case cfg.ADMChannels > 0 && (y == nil || y.DType != tensor.F32 || len(y.Shape) != 2 || x == nil ||
		len(x.Shape) < 1 || y.Shape[0] != x.Shape[0] || y.Shape[1] != cfg.ADMChannels):
		return nil, fmt.Errorf("unet: want y [B, %d] f32 for the label embedding, got %v", cfg.ADMChannels, y)
	}
	switch {
	case x == nil || len(x.Shape) != 4 || x.DType != tensor.F32 || x.Shape[1] != cfg.InChannels || x.Numel() == 0:
		return nil, fmt.Errorf("unet: want x [B, %d, H, W] f32, got %v", cfg.InChannels, x)
	case len(t) != x.Shape[0]:
		return nil, fmt.Errorf("unet: %d timesteps for a batch of %d", len(t), x.Shape[0])
	case ctx == nil || len(ctx.Shape) != 3 || ctx.DType != tensor.F32 || ctx.Shape[0] != x.Shape[0] ||
		ctx.Shape[2] != cfg.ContextDim || ctx.Shape[1] < 1:
		return nil, fmt.Errorf("unet: want context [%d, L, %d] f32, got %v", x.Shape[0], cfg.ContextDim, ctx)
	}
	for _, v := range t {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return nil, fmt.Errorf("unet: timestep %v is not finite", v)
		}
	}
	// Deferred in this order, the wrapper runs after Recover has set err.
	defer func() {
		if err != nil {
			out, err = nil, fmt.Errorf("unet: %w", err)
		}
	}()
	defer tensor.Recover(&err)

	// On a device backend every activation below stays in device memory:
	// the inputs cross once here and the result once at the end.
	// TODO: tensors still held when a kernel fails (skips, emb) are not
	// released; on a device that leaks their memory until the backend closes.
	be = tensor.OnDevice(be)
	te := upload(be, TimestepEmbedding(t, cfg.ModelChannels))
	xd, ctxd, yd := upload(be, x), upload(be, ctx), upload(be, y)
	defer tensor.ReleaseUploaded(xd, x)
	defer tensor.ReleaseUploaded(ctxd, ctx)
	defer tensor.ReleaseUploaded(yd, y)
	x, ctx, y = xd, ctxd, yd

	emb := u.TimeEmbed1.Forward(be, te)
	tensor.Release(te)
	tensor.Must(be.Unary(emb, emb, tensor.SiLU))
	e1 := emb
	emb = u.TimeEmbed2.Forward(be, e1)
	tensor.Release(e1)
	if u.LabelEmbed1 != nil {
		e := u.LabelEmbed1.Forward(be, y)
		tensor.Must(be.Unary(e, e, tensor.SiLU))
		l := u.LabelEmbed2.Forward(be, e)
		emb = nn.AddInPlace(be, emb, l)
		tensor.Release(e, l)
	}
	// Every ResBlock's emb_layers starts with SiLU; apply it once here.
	tensor.Must(be.Unary(emb, emb, tensor.SiLU))

	var skips []*tensor.Tensor
	h := x
	for _, b := range u.Input {
		h = b.forward(be, h, emb, ctx)
		skips = append(skips, h)
	}
	// The input blocks' outputs stay alive as skip connections; everything
	// else goes back to the activation pool as soon as it has been read.
	m := u.Mid1.Forward(be, h, emb)
	h = u.MidAttn.Forward(be, m, ctx)
	tensor.Release(m)
	m = u.Mid2.Forward(be, h, emb)
	tensor.Release(h)
	h = m
	for _, b := range u.Output {
		s := skips[len(skips)-1]
		skips = skips[:len(skips)-1]
		cat := nn.Concat(be, h, s)
		tensor.Release(h, s)
		h = b.Res.Forward(be, cat, emb)
		tensor.Release(cat)
		if b.Attn != nil {
			a := b.Attn.Forward(be, h, ctx)
			tensor.Release(h)
			h = a
		}
		if b.Up != nil {
			next := skips[len(skips)-1]
			up := b.Up.Forward(be, h, next.Shape[2], next.Shape[3])
			tensor.Release(h)
			h = up
		}
	}
	n := u.OutNorm.ForwardInPlace(be, h, true)
	out = u.OutConv.Forward(be, n)
	tensor.Release(n, emb)
	return tensor.Download(out)
}

// upload moves a model input into the device memory behind be (a copy that
// the caller releases) or returns it unchanged on a host backend.
func upload(be tensor.Backend, t *tensor.Tensor) *tensor.Tensor {
	d, err := tensor.Upload(be, t)
	tensor.Must(err)
	return d
}

// forward runs an input block: x [B, C, H, W] -> [B, Width, H', W'].
func (b *Block) forward(be tensor.Backend, x, emb, ctx *tensor.Tensor) *tensor.Tensor {
	switch {
	case b.Stem != nil:
		return b.Stem.Forward(be, x)
	case b.Down != nil:
		return b.Down.Forward(be, x)
	}
	h := b.Res.Forward(be, x, emb)
	if b.Attn != nil {
		a := b.Attn.Forward(be, h, ctx)
		tensor.Release(h)
		h = a
	}
	return h
}
