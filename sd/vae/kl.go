// Package vae holds the autoencoders that map images to Stable Diffusion
// latents and back: the ldm AutoencoderKL (KL, LoadKL) and the tiny TAESD
// family (Tiny, LoadTiny).
package vae

import (
	"fmt"

	"github.com/gosd/gosd/sd/nn"
	"github.com/gosd/gosd/sd/tensor"
)

// klEps is the GroupNorm epsilon used everywhere in the ldm autoencoder.
const klEps = 1e-6

// KL is the ldm AutoencoderKL of Stable Diffusion 1.x/2.x (Rombach et al.,
// "High-Resolution Image Synthesis with Latent Diffusion Models", 2022):
// a convolutional encoder to a diagonal Gaussian over latents downscaled
// 8x per side, and a decoder back to images in about [-1, 1].
//
// The encoder is nil when the weights hold only a decoder.
type KL struct {
	Config        *KLConfig
	ScalingFactor float32 // multiply Encode's mean by this to get diffusion latents
	Encoder       *KLEncoder
	Decoder       *KLDecoder
	QuantConv     *nn.Conv2D // 1x1, 2z -> 2z, after the encoder
	PostQuantConv *nn.Conv2D // 1x1, z -> z, before the decoder
}

// KLResBlock is the autoencoder's ResnetBlock: GroupNorm+SiLU, conv3x3,
// GroupNorm+SiLU, conv3x3, plus the input (through a 1x1 nin_shortcut when
// the width changes). Field names follow the checkpoint keys.
type KLResBlock struct {
	Norm1, Norm2 *nn.GroupNorm
	Conv1, Conv2 *nn.Conv2D
	NinShortcut  *nn.Conv2D // nil when in == out
}

// KLAttention is the autoencoder's AttnBlock: single-head self-attention
// over the H*W positions with 1x1-convolution projections q, k, v and
// proj_out (held as linear layers on the token sequence, which is the same
// map), plus the input.
type KLAttention struct {
	Norm             *nn.GroupNorm
	Q, K, V, ProjOut *nn.Linear
}

// KLEncoder maps images to latent moments (before quant_conv).
type KLEncoder struct {
	ConvIn  *nn.Conv2D
	Down    []KLLevel
	Mid1    *KLResBlock
	MidAttn *KLAttention
	Mid2    *KLResBlock
	NormOut *nn.GroupNorm
	ConvOut *nn.Conv2D // -> 2z channels: mean and log-variance
}

// KLDecoder maps latents (after post_quant_conv) to images.
type KLDecoder struct {
	ConvIn  *nn.Conv2D
	Mid1    *KLResBlock
	MidAttn *KLAttention
	Mid2    *KLResBlock
	Up      []KLLevel // indexed as in the checkpoint; run from the last to the first
	NormOut *nn.GroupNorm
	ConvOut *nn.Conv2D
}

// KLLevel is one resolution level: residual blocks, then an optional
// resampling convolution (downsample in the encoder, upsample in the decoder).
type KLLevel struct {
	Blocks   []*KLResBlock
	Resample *nn.Conv2D // nil at the last encoder level and the first decoder level
}

func loadKLResBlock(l *nn.Loader, in, out, groups int) *KLResBlock {
	r := &KLResBlock{
		Norm1: l.GroupNorm("norm1", in, groups, klEps),
		Conv1: l.Conv2D("conv1", in, out, 3, 1, 1, true),
		Norm2: l.GroupNorm("norm2", out, groups, klEps),
		Conv2: l.Conv2D("conv2", out, out, 3, 1, 1, true),
	}
	if in != out {
		r.NinShortcut = l.Conv2D("nin_shortcut", in, out, 1, 1, 0, true)
	}
	return r
}

func loadKLAttention(l *nn.Loader, c, groups int) *KLAttention {
	proj := func(name string) *nn.Linear {
		return &nn.Linear{Weight: l.Tensor(name+".weight", c, c, 1, 1).Reshape(c, c), Bias: l.Tensor(name+".bias", c)}
	}
	return &KLAttention{Norm: l.GroupNorm("norm", c, groups, klEps), Q: proj("q"), K: proj("k"), V: proj("v"), ProjOut: proj("proj_out")}
}

func loadKLEncoder(l *nn.Loader, c *KLConfig) *KLEncoder {
	e := &KLEncoder{ConvIn: l.Conv2D("conv_in", c.InChannels, c.Ch, 3, 1, 1, true)}
	in := c.Ch
	for i, m := range c.ChMult {
		var lv KLLevel
		for b := 0; b < c.NumResBlocks; b++ {
			lv.Blocks = append(lv.Blocks, loadKLResBlock(l.Subf("down.%d.block.%d", i, b), in, m*c.Ch, c.Groups))
			in = m * c.Ch
		}
		if i != len(c.ChMult)-1 {
			// ldm pads right and bottom by one, then convolves 3x3 with stride 2.
			conv := l.Conv2D(fmt.Sprintf("down.%d.downsample.conv", i), in, in, 3, 2, 0, true)
			conv.Params = tensor.Conv2DParams{Stride: 2, PadBottom: 1, PadRight: 1}
			lv.Resample = conv
		}
		e.Down = append(e.Down, lv)
	}
	e.Mid1 = loadKLResBlock(l.Sub("mid.block_1"), in, in, c.Groups)
	e.MidAttn = loadKLAttention(l.Sub("mid.attn_1"), in, c.Groups)
	e.Mid2 = loadKLResBlock(l.Sub("mid.block_2"), in, in, c.Groups)
	e.NormOut = l.GroupNorm("norm_out", in, c.Groups, klEps)
	e.ConvOut = l.Conv2D("conv_out", in, 2*c.ZChannels, 3, 1, 1, true)
	return e
}

func loadKLDecoder(l *nn.Loader, c *KLConfig) *KLDecoder {
	n := len(c.ChMult)
	in := c.Ch * c.ChMult[n-1]
	d := &KLDecoder{ConvIn: l.Conv2D("conv_in", c.ZChannels, in, 3, 1, 1, true)}
	d.Mid1 = loadKLResBlock(l.Sub("mid.block_1"), in, in, c.Groups)
	d.MidAttn = loadKLAttention(l.Sub("mid.attn_1"), in, c.Groups)
	d.Mid2 = loadKLResBlock(l.Sub("mid.block_2"), in, in, c.Groups)
	d.Up = make([]KLLevel, n)
	for i := n - 1; i >= 0; i-- {
		out := c.Ch * c.ChMult[i]
		for b := 0; b <= c.NumResBlocks; b++ {
			d.Up[i].Blocks = append(d.Up[i].Blocks, loadKLResBlock(l.Subf("up.%d.block.%d", i, b), in, out, c.Groups))
			in = out
		}
		if i != 0 {
			d.Up[i].Resample = l.Conv2D(fmt.Sprintf("up.%d.upsample.conv", i), in, in, 3, 1, 1, true)
		}
	}
	d.NormOut = l.GroupNorm("norm_out", in, c.Groups, klEps)
	d.ConvOut = l.Conv2D("conv_out", in, c.OutChannels, 3, 1, 1, true)
	return d
}

// LoadKL builds the autoencoder from src, reading names under KLPrefix, or
// without a prefix when src holds a bare VAE (as the standalone
// vae-ft-*.safetensors files do). With cfg nil the configuration is inferred
// (InferKLConfig). The encoder is loaded when src has encoder weights.
// Missing or misshapen tensors, and unused tensors under the prefix other
// than training-loss weights ("loss."), are errors.
func LoadKL(src tensor.Source, cfg *KLConfig) (*KL, error) {
	if cfg == nil {
		var err error
		if cfg, err = InferKLConfig(src); err != nil {
			return nil, err
		}
	} else if err := cfg.Validate(); err != nil {
		return nil, err
	}
	prefix := klFindPrefix(src)
	l := nn.NewLoader(src, prefix)
	m := &KL{Config: cfg, ScalingFactor: cfg.ScalingFactor}
	if l.Has("encoder.conv_in.weight") {
		m.Encoder = loadKLEncoder(l.Sub("encoder"), cfg)
		m.QuantConv = l.Conv2D("quant_conv", 2*cfg.ZChannels, 2*cfg.ZChannels, 1, 1, 0, true)
	}
	m.PostQuantConv = l.Conv2D("post_quant_conv", cfg.ZChannels, cfg.ZChannels, 1, 1, 0, true)
	m.Decoder = loadKLDecoder(l.Sub("decoder"), cfg)
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("vae: %w", err)
	}
	if prefix != "" {
		for _, name := range l.Unused(prefix) {
			if len(name) > len(prefix)+5 && name[len(prefix):len(prefix)+5] == "loss." {
				continue
			}
			return nil, fmt.Errorf("vae: checkpoint tensor %q does not fit the configuration", name)
		}
	}
	return m, nil
}

// forward: x [B, In, H, W] -> [B, Out, H, W] (a new tensor; x is left as
// it was).
func (r *KLResBlock) forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	h := r.Conv1.ForwardRelease(be, r.Norm1.Forward(be, x, true))
	h = r.Conv2.ForwardRelease(be, r.Norm2.ForwardInPlace(be, h, true))
	return nn.AddShortcut(be, h, x, r.NinShortcut)
}

// forward: x [B, C, H, W] -> [B, C, H, W] (a new tensor).
func (a *KLAttention) forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	b, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	n := a.Norm.Forward(be, x, false)
	t := nn.Transpose(be, n.Reshape(b, c, h*w)) // [B, HW, C]
	tensor.Release(n)
	q, k, v := a.Q.Forward(be, t), a.K.Forward(be, t), a.V.Forward(be, t)
	tensor.Release(t)
	o := nn.Attention(be, q, k, v, 1, false)
	tensor.Release(q, k, v)
	p := a.ProjOut.Forward(be, o)
	tensor.Release(o)
	t = nn.Transpose(be, p) // [B, C, HW]
	tensor.Release(p)
	return nn.AddInPlace(be, t.Reshape(b, c, h, w), x)
}

// step replaces *h by f(*h) and hands the old tensor to the activation pool.
func step(h **tensor.Tensor, f func(*tensor.Tensor) *tensor.Tensor) {
	n := f(*h)
	tensor.Release(*h)
	*h = n
}

// forward: x [B, In, H, W] -> moments [B, 2z, ceil-ish(H/8), ...] before quant_conv.
func (e *KLEncoder) forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	h := e.ConvIn.Forward(be, x)
	for _, lv := range e.Down {
		for _, b := range lv.Blocks {
			step(&h, func(t *tensor.Tensor) *tensor.Tensor { return b.forward(be, t) })
		}
		if lv.Resample != nil {
			step(&h, func(t *tensor.Tensor) *tensor.Tensor { return lv.Resample.Forward(be, t) })
		}
	}
	step(&h, func(t *tensor.Tensor) *tensor.Tensor { return e.Mid1.forward(be, t) })
	step(&h, func(t *tensor.Tensor) *tensor.Tensor { return e.MidAttn.forward(be, t) })
	step(&h, func(t *tensor.Tensor) *tensor.Tensor { return e.Mid2.forward(be, t) })
	y := e.ConvOut.Forward(be, e.NormOut.ForwardInPlace(be, h, true))
	tensor.Release(h)
	return y
}

// forward: z [B, z, h, w] (after post_quant_conv) -> [B, Out, 8h, 8w].
func (d *KLDecoder) forward(be tensor.Backend, z *tensor.Tensor) *tensor.Tensor {
	h := d.ConvIn.Forward(be, z)
	step(&h, func(t *tensor.Tensor) *tensor.Tensor { return d.Mid1.forward(be, t) })
	step(&h, func(t *tensor.Tensor) *tensor.Tensor { return d.MidAttn.forward(be, t) })
	step(&h, func(t *tensor.Tensor) *tensor.Tensor { return d.Mid2.forward(be, t) })
	for i := len(d.Up) - 1; i >= 0; i-- {
		for _, b := range d.Up[i].Blocks {
			step(&h, func(t *tensor.Tensor) *tensor.Tensor { return b.forward(be, t) })
		}
		if r := d.Up[i].Resample; r != nil {
			step(&h, func(t *tensor.Tensor) *tensor.Tensor { return nn.Upsample2x(be, t) })
			step(&h, func(t *tensor.Tensor) *tensor.Tensor { return r.Forward(be, t) })
		}
	}
	y := d.ConvOut.Forward(be, d.NormOut.ForwardInPlace(be, h, true))
	tensor.Release(h)
	return y
}

// Decode maps latents to images.
//
// z: [B, ZChannels, h, w] f32 latents ALREADY divided by ScalingFactor
// -> [B, OutChannels, 8h, 8w] f32 images in about [-1, 1] (not clamped).
//
// TODO: tiled decoding for large images; the largest activations are
// [B, 256, 8h, 8w] f32 (1 GiB per image at 1024x1024) and, with the
// activation pool, two or three are alive at once.
func (m *KL) Decode(be tensor.Backend, z *tensor.Tensor) (img *tensor.Tensor, err error) {
	c := m.Config
	if z == nil || len(z.Shape) != 4 || z.DType != tensor.F32 || z.Shape[1] != c.ZChannels || z.Numel() == 0 {
		return nil, fmt.Errorf("vae: want latents [B, %d, h, w] f32, got %v", c.ZChannels, z)
	}
	defer func() {
		if err != nil {
			img, err = nil, fmt.Errorf("vae decode: %w", err)
		}
	}()
	defer tensor.Recover(&err)
	be = tensor.OnDevice(be) // activations stay on a device backend's device
	zd, err := tensor.Upload(be, z)
	if err != nil {
		return nil, err
	}
	defer tensor.ReleaseUploaded(zd, z)
	p := m.PostQuantConv.Forward(be, zd)
	img = m.Decoder.forward(be, p)
	tensor.Release(p)
	return tensor.Download(img)
}

// Encode maps images to the diagonal Gaussian posterior over latents.
//
// x: [B, InChannels, H, W] f32 images in [-1, 1], H and W multiples of 8
// (more generally of Config.Factor()) -> mean and logvar, each
// [B, ZChannels, H/8, W/8]. logvar is clamped to [-30, 20] as ldm does.
// Multiply the mean (or a sample mean + exp(logvar/2)·noise) by
// ScalingFactor to get diffusion latents.
func (m *KL) Encode(be tensor.Backend, x *tensor.Tensor) (mean, logvar *tensor.Tensor, err error) {
	c := m.Config
	if m.Encoder == nil {
		return nil, nil, fmt.Errorf("vae: the checkpoint has no encoder weights")
	}
	f := c.Factor()
	if x == nil || len(x.Shape) != 4 || x.DType != tensor.F32 || x.Shape[1] != c.InChannels || x.Numel() == 0 {
		return nil, nil, fmt.Errorf("vae: want images [B, %d, H, W] f32, got %v", c.InChannels, x)
	}
	if x.Shape[2]%f != 0 || x.Shape[3]%f != 0 {
		return nil, nil, fmt.Errorf("vae: image size %dx%d is not a multiple of %d", x.Shape[3], x.Shape[2], f)
	}
	defer func() {
		if err != nil {
			mean, logvar, err = nil, nil, fmt.Errorf("vae encode: %w", err)
		}
	}()
	defer tensor.Recover(&err)
	be = tensor.OnDevice(be)
	xd, err := tensor.Upload(be, x)
	if err != nil {
		return nil, nil, err
	}
	defer tensor.ReleaseUploaded(xd, x)
	e := m.Encoder.forward(be, xd)
	mom := m.QuantConv.Forward(be, e) // [B, 2z, h, w]
	tensor.Release(e)
	if mom, err = tensor.Download(mom); err != nil {
		return nil, nil, err
	}
	defer tensor.Release(mom)
	b, z, h, w := mom.Shape[0], c.ZChannels, mom.Shape[2], mom.Shape[3]
	mean, logvar = tensor.New(b, z, h, w), tensor.New(b, z, h, w)
	n := z * h * w
	for i := 0; i < b; i++ {
		copy(mean.F32[i*n:(i+1)*n], mom.F32[2*i*n:])
		lv := logvar.F32[i*n : (i+1)*n]
		copy(lv, mom.F32[(2*i+1)*n:])
		for j, v := range lv {
			lv[j] = min(max(v, -30), 20)
		}
	}
	return mean, logvar, nil
}
