package vae

import (
	"context"
	"fmt"
	"strings"

	"github.com/gosd/gosd/sd/nn"
	"github.com/gosd/gosd/sd/tensor"
)

// TinyRole says which half of a tiny autoencoder a Tiny is.
type TinyRole uint8

const (
	TinyEncoder TinyRole = iota + 1 // image [B, 3, H, W] -> latent [B, C, H/8, W/8]
	TinyDecoder                     // latent [B, C, h, w] -> image [B, 3, 8h, 8w]
)

func (r TinyRole) String() string {
	switch r {
	case TinyEncoder:
		return "encoder"
	case TinyDecoder:
		return "decoder"
	}
	return fmt.Sprintf("TinyRole(%d)", uint8(r))
}

// Tiny is one half (encoder or decoder) of a tiny autoencoder of the TAESD
// family (TAESD, TAESDXL, TAESD3, TAEF1, TAEF2; Ollin Boer Bohan,
// github.com/madebyollin/taesd): a stack of 3x3 convolutions and residual
// blocks of 64 channels that maps images to the latent space of a diffusion
// model's VAE and back, 8x per side.
//
// Conventions (those of the original): images are in [0, 1], not [-1, 1].
// For SD 1.x/2.x/XL the latents are those the UNet works on, i.e. the KL
// VAE's latents already multiplied by its scaling factor (TAESD's own factor
// is 1). The decoder first soft-clamps latents with 3*tanh(x/3) and returns
// images that are roughly, not strictly, within [0, 1].
//
// The layer layout is fixed and read from the weights' names, which index an
// nn.Sequential:
//
//	encoder: 0 conv 3->W, 1 block, 2 conv s2, 3-5 blocks, 6 conv s2, 7-9 blocks,
//	         10 conv s2, 11-13 blocks, 14 conv W->C
//	decoder: 0 clamp, 1 conv C->W, 2 ReLU, 3-5 blocks, 6 up, 7 conv, 8-10 blocks,
//	         11 up, 12 conv, 13-15 blocks, 16 up, 17 conv, 18 block, 19 conv W->3
//
// where "conv s2" is a 3x3 stride-2 convolution without bias, "up" is 2x
// nearest upsampling followed by a 3x3 convolution without bias, and a block
// is relu(conv-relu-conv-relu-conv(x) + x). The latent channel count C and the
// width W come from the tensors. TAEF2 (FLUX.2, C = 32) adds a "pool" branch
// to the lowest-resolution blocks (encoder 11-13, decoder 3-5), found by its
// tensor names: x += conv1x1(relu(groupnorm4(conv1x1(x)))) before the block.
// The 32x-downscaling variant (TAESANA) has another layout and is rejected.
type Tiny struct {
	Role           TinyRole
	LatentChannels int // C
	Width          int // W, channels inside the network (64 in every released model)
	steps          []tinyStep
}

type tinyOp uint8

const (
	tinyConv  tinyOp = iota // conv, then ReLU if relu is set
	tinyBlock               // residual block
	tinyClamp               // 3*tanh(x/3)
	tinyUp                  // 2x nearest upsampling
)

type tinyStep struct {
	op    tinyOp
	conv  *nn.Conv2D
	relu  bool
	block *tinyResBlock
}

// tinyResBlock is TAESD's Block(W, W): conv.0, conv.2, conv.4 are 3x3
// convolutions with bias, skip an optional 1x1 convolution (absent: identity),
// and pool the optional TAEF2 branch pool.0 (1x1, W->4W), pool.1 (group norm,
// 4 groups), ReLU, pool.3 (1x1, 4W->W).
type tinyResBlock struct {
	conv0, conv2, conv4 *nn.Conv2D
	skip                *nn.Conv2D
	pool0, pool3        *nn.Conv2D
	poolNorm            *nn.GroupNorm
}

// tinyPoolGroups and tinyPoolEps are the pool branch's group-norm settings
// (torch.nn.GroupNorm(4, 4W) with its default eps); they are not stored in
// the weights.
const (
	tinyPoolGroups = 4
	tinyPoolEps    = 1e-5
)

// LoadTiny builds a tiny encoder or decoder from the weights under prefix in
// src: "" for the original .pth/.safetensors files (taesd_encoder.pth,
// taef2_decoder.pth, ...), "encoder.layers." or "decoder.layers." for the
// diffusers AutoencoderTiny layout. The role is recognised from the names:
// an encoder starts with "0.weight" (3 input channels), a decoder with
// "1.weight". Every tensor under prefix must be used.
func LoadTiny(src tensor.Source, prefix string) (*Tiny, error) {
	first, hasEnc := src.Get(prefix + "0.weight")
	dfirst, hasDec := src.Get(prefix + "1.weight")
	m := &Tiny{}
	switch {
	case hasEnc && len(first.Shape) == 4 && first.Shape[1] == 3:
		m.Role, m.Width = TinyEncoder, first.Shape[0]
		last, ok := src.Get(prefix + "14.weight")
		if !ok || len(last.Shape) != 4 {
			return nil, fmt.Errorf("vae: tiny encoder: no %q; not a supported TAESD layout "+
				"(the 32x-downscaling TAESANA variant is not supported)", prefix+"14.weight")
		}
		m.LatentChannels = last.Shape[0]
	case !hasEnc && hasDec && len(dfirst.Shape) == 4:
		m.Role, m.Width, m.LatentChannels = TinyDecoder, dfirst.Shape[0], dfirst.Shape[1]
	default:
		return nil, fmt.Errorf("vae: no tiny autoencoder weights under prefix %q "+
			"(want %q [W, 3, 3, 3] for an encoder or %q [W, C, 3, 3] for a decoder)",
			prefix, prefix+"0.weight", prefix+"1.weight")
	}
	l := nn.NewLoader(src, prefix)
	if m.Role == TinyEncoder {
		m.steps = loadTinyEncoder(l, m.Width, m.LatentChannels)
	} else {
		m.steps = loadTinyDecoder(l, m.Width, m.LatentChannels)
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("vae: tiny %s: %w", m.Role, err)
	}
	if extra := l.Unused(prefix); len(extra) > 0 {
		if len(extra) > 5 {
			extra = append(extra[:5], "...")
		}
		return nil, fmt.Errorf("vae: tiny %s: unexpected tensors %s; not a supported TAESD layout",
			m.Role, strings.Join(extra, ", "))
	}
	return m, nil
}

func loadTinyEncoder(l *nn.Loader, w, c int) []tinyStep {
	steps := []tinyStep{{op: tinyConv, conv: l.Conv2D("0", 3, w, 3, 1, 1, true)}}
	idx := 1
	for stage := range 4 {
		if stage > 0 {
			steps = append(steps, tinyStep{op: tinyConv, conv: l.Conv2D(fmt.Sprint(idx), w, w, 3, 2, 1, false)})
			idx++
		}
		n := 3
		if stage == 0 {
			n = 1
		}
		for range n {
			steps = append(steps, tinyStep{op: tinyBlock, block: loadTinyResBlock(l.Subf("%d", idx), w)})
			idx++
		}
	}
	return append(steps, tinyStep{op: tinyConv, conv: l.Conv2D(fmt.Sprint(idx), w, c, 3, 1, 1, true)})
}

func loadTinyDecoder(l *nn.Loader, w, c int) []tinyStep {
	steps := []tinyStep{
		{op: tinyClamp},
		{op: tinyConv, conv: l.Conv2D("1", c, w, 3, 1, 1, true), relu: true},
	}
	idx := 3
	for stage := range 4 {
		if stage > 0 {
			steps = append(steps, tinyStep{op: tinyUp},
				tinyStep{op: tinyConv, conv: l.Conv2D(fmt.Sprint(idx+1), w, w, 3, 1, 1, false)})
			idx += 2
		}
		n := 3
		if stage == 3 {
			n = 1
		}
		for range n {
			steps = append(steps, tinyStep{op: tinyBlock, block: loadTinyResBlock(l.Subf("%d", idx), w)})
			idx++
		}
	}
	return append(steps, tinyStep{op: tinyConv, conv: l.Conv2D(fmt.Sprint(idx), w, 3, 3, 1, 1, true)})
}

func loadTinyResBlock(l *nn.Loader, w int) *tinyResBlock {
	b := &tinyResBlock{
		conv0: l.Conv2D("conv.0", w, w, 3, 1, 1, true),
		conv2: l.Conv2D("conv.2", w, w, 3, 1, 1, true),
		conv4: l.Conv2D("conv.4", w, w, 3, 1, 1, true),
	}
	if l.Has("skip.weight") {
		b.skip = l.Conv2D("skip", w, w, 1, 1, 0, false)
	}
	if l.Has("pool.0.weight") {
		b.pool0 = l.Conv2D("pool.0", w, 4*w, 1, 1, 0, false)
		b.poolNorm = l.GroupNorm("pool.1", 4*w, tinyPoolGroups, tinyPoolEps)
		b.pool3 = l.Conv2D("pool.3", 4*w, w, 1, 1, 0, false)
	}
	return b
}

// HasPool reports whether any block carries the TAEF2 pool branch.
func (m *Tiny) HasPool() bool {
	for _, s := range m.steps {
		if s.block != nil && s.block.pool0 != nil {
			return true
		}
	}
	return false
}

// Forward runs the network: for an encoder x: [B, 3, H, W] f32 in [0, 1]
// with H and W multiples of 8 -> latent [B, C, H/8, W/8]; for a decoder
// x: [B, C, h, w] -> image [B, 3, 8h, 8w], unclamped. It stops between
// layers when ctx is done.
func (m *Tiny) Forward(ctx context.Context, be tensor.Backend, x *tensor.Tensor) (y *tensor.Tensor, err error) {
	if err := m.checkInput(x); err != nil {
		return nil, err
	}
	defer tensor.Recover(&err)
	// Every intermediate goes back to the activation pool once read; on a
	// device backend they all stay on the device.
	be = tensor.OnDevice(be)
	in, err := tensor.Upload(be, x)
	if err != nil {
		return nil, err
	}
	defer tensor.ReleaseUploaded(in, x)
	cur := in
	for _, s := range m.steps {
		if err := ctx.Err(); err != nil {
			if cur != in {
				tensor.Release(cur)
			}
			return nil, err
		}
		var next *tensor.Tensor
		switch s.op {
		case tinyConv:
			next = s.conv.Forward(be, cur)
			if s.relu {
				tensor.Must(be.Unary(next, next, tensor.ReLU))
			}
		case tinyBlock:
			next = s.block.forward(be, cur)
		case tinyClamp:
			next = nn.Scale(be, cur, 1.0/3, 0)
			tensor.Must(be.Unary(next, next, tensor.Tanh))
			tensor.Must(be.Scale(next, next, 3, 0))
		case tinyUp:
			next = nn.Upsample2x(be, cur)
		}
		if cur != in {
			tensor.Release(cur)
		}
		cur = next
	}
	return tensor.Download(cur)
}

func (m *Tiny) checkInput(x *tensor.Tensor) error {
	if x == nil || x.DType != tensor.F32 || len(x.Shape) != 4 {
		return fmt.Errorf("vae: tiny %s: want a [B, C, H, W] f32 input, got %v", m.Role, x)
	}
	switch m.Role {
	case TinyEncoder:
		if x.Shape[1] != 3 || x.Shape[2]%8 != 0 || x.Shape[3]%8 != 0 || x.Shape[2] == 0 || x.Shape[3] == 0 {
			return fmt.Errorf("vae: tiny encoder: want an image [B, 3, H, W] with H and W positive multiples of 8, got %s",
				tensor.ShapeString(x.Shape))
		}
	case TinyDecoder:
		if x.Shape[1] != m.LatentChannels || x.Shape[2] == 0 || x.Shape[3] == 0 {
			return fmt.Errorf("vae: tiny decoder: want a latent [B, %d, h, w], got %s",
				m.LatentChannels, tensor.ShapeString(x.Shape))
		}
	default:
		return fmt.Errorf("vae: tiny autoencoder not loaded")
	}
	return nil
}

// Encode is Forward for an encoder: x [B, 3, H, W] in [0, 1] -> [B, C, H/8, W/8].
func (m *Tiny) Encode(ctx context.Context, be tensor.Backend, x *tensor.Tensor) (*tensor.Tensor, error) {
	if m.Role != TinyEncoder {
		return nil, fmt.Errorf("vae: Encode called on a tiny %s", m.Role)
	}
	return m.Forward(ctx, be, x)
}

// Decode is Forward for a decoder: z [B, C, h, w] -> [B, 3, 8h, 8w], about [0, 1], unclamped.
func (m *Tiny) Decode(ctx context.Context, be tensor.Backend, z *tensor.Tensor) (*tensor.Tensor, error) {
	if m.Role != TinyDecoder {
		return nil, fmt.Errorf("vae: Decode called on a tiny %s", m.Role)
	}
	return m.Forward(ctx, be, z)
}

// forward: x [B, W, H, W'] -> same shape.
// The input x stays the caller's; every intermediate is released.
func (b *tinyResBlock) forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	if b.pool0 != nil {
		p := b.pool0.Forward(be, x)
		tensor.Must(be.GroupNorm(p, p, b.poolNorm.Weight, b.poolNorm.Bias, b.poolNorm.Groups, b.poolNorm.Eps, false))
		tensor.Must(be.Unary(p, p, tensor.ReLU))
		q := b.pool3.ForwardRelease(be, p)
		x = nn.Add(be, x, q)
		tensor.Release(q)
		defer tensor.Release(x) // the sum, not the caller's x
	}
	h := b.conv0.Forward(be, x)
	tensor.Must(be.Unary(h, h, tensor.ReLU))
	h = b.conv2.ForwardRelease(be, h)
	tensor.Must(be.Unary(h, h, tensor.ReLU))
	h = b.conv4.ForwardRelease(be, h)
	nn.AddShortcut(be, h, x, b.skip)
	tensor.Must(be.Unary(h, h, tensor.ReLU))
	return h
}
