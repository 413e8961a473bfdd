package unet

import (
	"github.com/gosd/gosd/sd/nn"
	"github.com/gosd/gosd/sd/tensor"
)

// Group-norm epsilons of the ldm UNet: residual blocks and the output head
// use PyTorch's default 1e-5, spatial transformers use 1e-6.
const (
	resEps   = 1e-5
	transEps = 1e-6
	lnEps    = 1e-5 // LayerNorm in transformer blocks
)

// ResBlock is ldm's ResBlock: GroupNorm+SiLU, conv3x3, plus a per-channel
// projection of the time embedding, GroupNorm+SiLU, conv3x3, and a 1x1
// skip convolution when the width changes. Field names follow the
// checkpoint keys (in_layers.0, in_layers.2, emb_layers.1, out_layers.0,
// out_layers.3, skip_connection).
type ResBlock struct {
	InNorm  *nn.GroupNorm
	InConv  *nn.Conv2D
	Emb     *nn.Linear
	OutNorm *nn.GroupNorm
	OutConv *nn.Conv2D
	Skip    *nn.Conv2D // nil when in == out
}

func loadResBlock(l *nn.Loader, in, out, embDim, groups int) *ResBlock {
	r := &ResBlock{
		InNorm:  l.GroupNorm("in_layers.0", in, groups, resEps),
		InConv:  l.Conv2D("in_layers.2", in, out, 3, 1, 1, true),
		Emb:     l.Linear("emb_layers.1", embDim, out, true),
		OutNorm: l.GroupNorm("out_layers.0", out, groups, resEps),
		OutConv: l.Conv2D("out_layers.3", out, out, 3, 1, 1, true),
	}
	if in != out {
		r.Skip = l.Conv2D("skip_connection", in, out, 1, 1, 0, true)
	}
	return r
}

// Forward: x [B, In, H, W], embAct [B, 4*ModelChannels] (the time embedding
// after SiLU) -> [B, Out, H, W].
func (r *ResBlock) Forward(be tensor.Backend, x, embAct *tensor.Tensor) *tensor.Tensor {
	h := r.InConv.ForwardRelease(be, r.InNorm.Forward(be, x, true))
	e := r.Emb.Forward(be, embAct)
	tensor.Must(be.AddChannel(h, h, e))
	tensor.Release(e)
	h = r.OutConv.ForwardRelease(be, r.OutNorm.ForwardInPlace(be, h, true))
	return nn.AddShortcut(be, h, x, r.Skip)
}

// CrossAttention is ldm's CrossAttention: bias-free q, k, v projections,
// multi-head scaled dot-product attention, and an output projection with bias.
type CrossAttention struct {
	ToQ, ToK, ToV, ToOut *nn.Linear
	Heads                int
}

func loadAttention(l *nn.Loader, c, ctxDim, heads int) *CrossAttention {
	return &CrossAttention{
		ToQ:   l.Linear("to_q", c, c, false),
		ToK:   l.Linear("to_k", ctxDim, c, false),
		ToV:   l.Linear("to_v", ctxDim, c, false),
		ToOut: l.Linear("to_out.0", c, c, true),
		Heads: heads,
	}
}

// Forward: x [B, L, C], ctx [B, Lc, Cctx] (x itself for self-attention)
// -> [B, L, C].
func (a *CrossAttention) Forward(be tensor.Backend, x, ctx *tensor.Tensor) *tensor.Tensor {
	q := a.ToQ.Forward(be, x)
	k := a.ToK.Forward(be, ctx)
	v := a.ToV.Forward(be, ctx)
	o := nn.Attention(be, q, k, v, a.Heads, false)
	tensor.Release(q, k, v)
	y := a.ToOut.Forward(be, o)
	tensor.Release(o)
	return y
}

// TransformerBlock is ldm's BasicTransformerBlock: pre-norm self-attention,
// cross-attention to the text context, and a GEGLU feed-forward network
// (ff.net.0.proj to 8C, GEGLU to 4C, ff.net.2 back to C), each residual.
type TransformerBlock struct {
	Norm1, Norm2, Norm3 *nn.LayerNorm
	Attn1, Attn2        *CrossAttention
	FFProj, FFOut       *nn.Linear
}

func loadTransformerBlock(l *nn.Loader, c, ctxDim, heads int) *TransformerBlock {
	return &TransformerBlock{
		Norm1:  l.LayerNorm("norm1", c, lnEps),
		Attn1:  loadAttention(l.Sub("attn1"), c, c, heads),
		Norm2:  l.LayerNorm("norm2", c, lnEps),
		Attn2:  loadAttention(l.Sub("attn2"), c, ctxDim, heads),
		Norm3:  l.LayerNorm("norm3", c, lnEps),
		FFProj: l.Linear("ff.net.0.proj", c, 8*c, true),
		FFOut:  l.Linear("ff.net.2", 4*c, c, true),
	}
}

// Forward: x [B, L, C], ctx [B, Lc, Cctx] -> [B, L, C] (a new tensor; x is
// left as it was).
func (t *TransformerBlock) Forward(be tensor.Backend, x, ctx *tensor.Tensor) *tensor.Tensor {
	h := t.Norm1.Forward(be, x)
	y := nn.AddInPlace(be, t.Attn1.Forward(be, h, h), x)
	tensor.Release(h)
	h = t.Norm2.Forward(be, y)
	a := t.Attn2.Forward(be, h, ctx)
	tensor.Release(h)
	nn.AddInPlace(be, y, a)
	tensor.Release(a)
	h = t.Norm3.Forward(be, y)
	p := t.FFProj.Forward(be, h)
	tensor.Release(h)
	g := nn.GEGLU(be, p)
	tensor.Release(p)
	f := t.FFOut.Forward(be, g)
	tensor.Release(g)
	nn.AddInPlace(be, y, f)
	tensor.Release(f)
	return y
}

// SpatialTransformer is ldm's SpatialTransformer: GroupNorm, proj_in, a
// stack of transformer blocks over the H*W positions as tokens, proj_out,
// plus the input. In SD 1.x proj_in/proj_out are 1x1 convolutions
// ([C, C, 1, 1]); in SD 2.x they are linear layers ([C, C]). Both are held
// here as linear layers applied to the token sequence: a 1x1 convolution is
// exactly a per-position linear map with the same weight matrix.
type SpatialTransformer struct {
	Norm    *nn.GroupNorm
	ProjIn  *nn.Linear
	Blocks  []*TransformerBlock
	ProjOut *nn.Linear
}

func loadSpatialTransformer(l *nn.Loader, c, ctxDim, heads, depth, groups int, linear bool) *SpatialTransformer {
	s := &SpatialTransformer{Norm: l.GroupNorm("norm", c, groups, transEps)}
	proj := func(name string) *nn.Linear {
		if linear {
			return l.Linear(name, c, c, true)
		}
		w := l.Tensor(name+".weight", c, c, 1, 1)
		return &nn.Linear{Weight: w.Reshape(c, c), Bias: l.Tensor(name+".bias", c)}
	}
	s.ProjIn = proj("proj_in")
	for i := 0; i < depth; i++ {
		s.Blocks = append(s.Blocks, loadTransformerBlock(l.Subf("transformer_blocks.%d", i), c, ctxDim, heads))
	}
	s.ProjOut = proj("proj_out")
	return s
}

// Forward: x [B, C, H, W], ctx [B, Lc, Cctx] -> [B, C, H, W].
func (s *SpatialTransformer) Forward(be tensor.Backend, x, ctx *tensor.Tensor) *tensor.Tensor {
	b, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	n := s.Norm.Forward(be, x, false)
	t := nn.Transpose(be, n.Reshape(b, c, h*w)) // [B, HW, C]
	tensor.Release(n)
	u := s.ProjIn.Forward(be, t)
	tensor.Release(t)
	for _, blk := range s.Blocks {
		nu := blk.Forward(be, u, ctx)
		tensor.Release(u)
		u = nu
	}
	p := s.ProjOut.Forward(be, u)
	tensor.Release(u)
	t = nn.Transpose(be, p) // [B, C, HW]
	tensor.Release(p)
	return nn.AddInPlace(be, t.Reshape(b, c, h, w), x)
}

// Downsample is a 3x3 convolution with stride 2 and padding 1 (op):
// [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)].
type Downsample struct{ Op *nn.Conv2D }

// Forward: x [B, C, H, W] -> [B, C, ceil(H/2), ceil(W/2)].
func (d *Downsample) Forward(be tensor.Backend, x *tensor.Tensor) *tensor.Tensor {
	return d.Op.Forward(be, x)
}

// Upsample is nearest-neighbour upsampling to the size of the skip
// connection it joins, then a 3x3 convolution (conv).
type Upsample struct{ Conv *nn.Conv2D }

// Forward: x [B, C, H, W] -> [B, C, oh, ow] where oh is 2H or 2H-1 and ow
// is 2W or 2W-1.
func (u *Upsample) Forward(be tensor.Backend, x *tensor.Tensor, oh, ow int) *tensor.Tensor {
	up := upsampleNearest(be, x, oh, ow)
	y := u.Conv.Forward(be, up)
	tensor.Release(up)
	return y
}

// upsampleNearest resizes x [B, C, H, W] to [B, C, oh, ow] by nearest
// neighbour as PyTorch's F.interpolate(size=(oh, ow), mode="nearest"),
// which reads source row floor(i*H/oh) for output row i, for oh in {2H, 2H-1}
// (and likewise for columns).
//
// Each downsampler maps a size n to ceil(n/2), so the skip connection an
// upsampled map joins has 2H or 2H-1 rows. For oh = 2H the rule reads row
// floor(i/2): plain 2x upsampling. For oh = 2H-1 and 0 <= i <= 2H-2,
//
//	i*H/(2H-1) = i/2 + i/(2(2H-1)),  and  0 <= i/(2(2H-1)) < 1/2,
//
// so if i = 2k the value lies in [k, k+1/2) and if i = 2k+1 it lies in
// [k+1/2, k+1): either way its floor is floor(i/2). The margin to the next
// integer is at least 1/(2(2H-1)), far above float32 rounding for any
// realistic H, so PyTorch's float computation gives the same rows. Hence
// 2x nearest upsampling followed by dropping the last row (and column)
// equals the general nearest resize exactly.
func upsampleNearest(be tensor.Backend, x *tensor.Tensor, oh, ow int) *tensor.Tensor {
	b, c, h, w := x.Shape[0], x.Shape[1], x.Shape[2], x.Shape[3]
	if oh < 2*h-1 || oh > 2*h || ow < 2*w-1 || ow > 2*w {
		tensor.Must(tensor.ShapeError("unet.upsample", "cannot resize %dx%d to %dx%d by nearest 2x upsampling",
			h, w, oh, ow))
	}
	y := tensor.EmptyOn(be, b, c, oh, ow)
	tensor.Must(be.Upsample2x(y, x)) // drops the last row and column for odd sizes
	return y
}
