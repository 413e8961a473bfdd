package clip

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/gosd/gosd/sd/nn"
	"github.com/gosd/gosd/sd/tensor"
)

// Where the OpenCLIP text encoders live in single-file checkpoints.
const (
	// OpenCLIPPrefixSD2 holds SD 2.x's OpenCLIP ViT-H/14 text model.
	OpenCLIPPrefixSD2 = "cond_stage_model.model."
	// OpenCLIPPrefixSDXL holds SDXL's second text encoder, OpenCLIP ViT-bigG/14.
	OpenCLIPPrefixSDXL = "conditioner.embedders.1.model."
)

// OpenCLIP is an OpenCLIP text transformer (open_clip's TextTransformer as
// Stable Diffusion 2.x and SDXL store it) held as a TextModel: the fused
// attention projection attn.in_proj_weight [3C, C] is viewed as q, k and v
// rows (no copy), ln_1/ln_2/mlp.c_fc/mlp.c_proj/ln_final become the
// TextModel's layer norms, fc1, fc2 and final norm, and the activation is
// exact (erf) GELU. Attention is causal with C/64 heads, as in CLIP.
type OpenCLIP struct {
	*TextModel
	// Projection is text_projection [C, P] (pooled = x @ Projection), or
	// nil when the file has none.
	Projection *tensor.Tensor
}

// InferOpenCLIPConfig reads an OpenCLIP text model's sizes from the
// weights under prefix: width and vocabulary from token_embedding, context
// from positional_embedding, layers by counting transformer.resblocks.N,
// MLP width from the first c_fc, heads as width/64, GELU, eps 1e-5.
func InferOpenCLIPConfig(src tensor.Source, prefix string) (Config, error) {
	tok, ok := src.Get(prefix + "token_embedding.weight")
	if !ok || len(tok.Shape) != 2 {
		return Config{}, fmt.Errorf("clip: checkpoint has no 2-D tensor %q", prefix+"token_embedding.weight")
	}
	pos, ok := src.Get(prefix + "positional_embedding")
	if !ok || len(pos.Shape) != 2 {
		return Config{}, fmt.Errorf("clip: checkpoint has no 2-D tensor %q", prefix+"positional_embedding")
	}
	c := Config{Vocab: tok.Shape[0], Hidden: tok.Shape[1], MaxPos: pos.Shape[0], Act: tensor.GELU, Eps: 1e-5}
	for {
		if _, ok := src.Get(prefix + "transformer.resblocks." + strconv.Itoa(c.Layers) + ".ln_1.weight"); !ok {
			break
		}
		c.Layers++
	}
	if c.Layers == 0 {
		return Config{}, fmt.Errorf("clip: checkpoint has no tensor %q", prefix+"transformer.resblocks.0.ln_1.weight")
	}
	fc, ok := src.Get(prefix + "transformer.resblocks.0.mlp.c_fc.weight")
	if !ok || len(fc.Shape) != 2 {
		return Config{}, fmt.Errorf("clip: checkpoint has no 2-D tensor %q", prefix+"transformer.resblocks.0.mlp.c_fc.weight")
	}
	c.FF = fc.Shape[0]
	if c.Hidden%headDim != 0 {
		return Config{}, fmt.Errorf("clip: width %d is not a multiple of the head width %d", c.Hidden, headDim)
	}
	c.Heads = c.Hidden / headDim
	return c, c.Validate()
}

// LoadOpenCLIP builds an OpenCLIP text model from the weights under prefix
// (OpenCLIPPrefixSD2 or OpenCLIPPrefixSDXL). A nil cfg is inferred with
// InferOpenCLIPConfig. layers > 0 loads only the first layers resblocks:
// SD 2.x conditions on the penultimate layer's output, so its pipeline
// loads Layers-1 of them and encodes with clip skip 1. text_projection is
// optional.
func LoadOpenCLIP(src tensor.Source, prefix string, cfg *Config, layers int) (*OpenCLIP, error) {
	c, err := resolveConfig(cfg, func() (Config, error) { return InferOpenCLIPConfig(src, prefix) })
	if err != nil {
		return nil, err
	}
	if layers > 0 {
		if layers > c.Layers {
			return nil, fmt.Errorf("clip: %d OpenCLIP layers requested, the model has %d", layers, c.Layers)
		}
		c.Layers = layers
	}
	l := nn.NewLoader(src, prefix)
	m := &TextModel{Config: c}
	m.Embeddings.TokenEmbedding = l.Tensor("token_embedding.weight", c.Vocab, c.Hidden)
	m.Embeddings.PositionEmbedding = l.Tensor("positional_embedding", c.MaxPos, c.Hidden)
	C := c.Hidden
	for i := 0; i < c.Layers; i++ {
		ll := l.Subf("transformer.resblocks.%d", i)
		w := ll.Tensor("attn.in_proj_weight", 3*C, C)
		b := ll.Tensor("attn.in_proj_bias", 3*C)
		part := func(j int) *nn.Linear {
			return &nn.Linear{Weight: rowView(w, j*C, C), Bias: rowView(b, j*C, C)}
		}
		m.Layers = append(m.Layers, Layer{
			LayerNorm1: ll.LayerNorm("ln_1", C, c.Eps),
			SelfAttn:   SelfAttn{QProj: part(0), KProj: part(1), VProj: part(2), OutProj: ll.Linear("attn.out_proj", C, C, true)},
			LayerNorm2: ll.LayerNorm("ln_2", C, c.Eps),
			MLP:        MLP{FC1: ll.Linear("mlp.c_fc", C, c.FF, true), FC2: ll.Linear("mlp.c_proj", c.FF, C, true)},
		})
	}
	m.FinalLayerNorm = l.LayerNorm("ln_final", C, c.Eps)
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("clip: %w", err)
	}
	o := &OpenCLIP{TextModel: m}
	if p, ok := src.Get(prefix + "text_projection"); ok {
		if len(p.Shape) != 2 || p.Shape[0] != C {
			return nil, fmt.Errorf("clip: tensor %q has shape %s, want [%d, P]", prefix+"text_projection", tensor.ShapeString(p.Shape), C)
		}
		o.Projection = p
	}
	return o, nil
}

// rowView returns rows [r, r+n) of t (leading dimension) without copying:
// [R, ...] -> [n, ...].
func rowView(t *tensor.Tensor, r, n int) *tensor.Tensor {
	if t == nil || len(t.Shape) == 0 || t.Shape[0] < r+n {
		return t // a loader error is already recorded
	}
	shape := append([]int{n}, t.Shape[1:]...)
	inner := tensor.Numel(t.Shape[1:])
	if t.DType == tensor.F32 {
		return tensor.FromF32(t.F32[r*inner:(r+n)*inner], shape...)
	}
	return tensor.FromHalf(t.Half[r*inner:(r+n)*inner], t.DType, shape...)
}

// Pooled returns the pooled text embedding of token sequences of equal
// length, tokens [B][L] -> [B, P] f32: every layer of the model, then
// final_layer_norm, read at the end-of-text position (the largest token
// id in the sequence, open_clip's text.argmax, so the first end token when
// the padding is 0) and multiplied by text_projection. This is the vector
// SDXL feeds its UNet through label_emb.
func (m *OpenCLIP) Pooled(be tensor.Backend, tokens [][]int) (out *tensor.Tensor, err error) {
	defer tensor.Recover(&err)
	if m.Projection == nil {
		return nil, errors.New("clip: the OpenCLIP model has no text_projection for a pooled output")
	}
	x, err := m.TokenEmbeddings(tokens)
	if err != nil {
		return nil, err
	}
	c := m.Config
	seq, w := x.Shape[1], c.Hidden
	if seq > c.MaxPos {
		return nil, fmt.Errorf("clip: sequence length %d outside 1..%d", seq, c.MaxPos)
	}
	pos := rows(m.Embeddings.PositionEmbedding, 0, seq, w)
	for b := range tokens {
		for i := range seq * w {
			x.F32[b*seq*w+i] += pos[i]
		}
	}
	for i := range m.Layers {
		x = m.Layers[i].forward(be, x, c)
	}
	sel := tensor.New(len(tokens), 1, w)
	for b, ts := range tokens {
		eot := 0
		for i, id := range ts {
			if id > ts[eot] {
				eot = i
			}
		}
		copy(sel.F32[b*w:(b+1)*w], x.F32[(b*seq+eot)*w:][:w])
	}
	sel = m.FinalLayerNorm.Forward(be, sel).Reshape(len(tokens), w)
	p := m.Projection.Shape[1]
	// Linear wants [out, in]: the transpose of text_projection.
	pt := tensor.FromF32(transpose2(m.Projection.Float32s(), w, p), p, w)
	out = tensor.New(len(tokens), p)
	tensor.Must(be.Linear(out, sel, pt, nil))
	return out, nil
}

// transpose2 transposes a row-major [r, c] matrix.
func transpose2(a []float32, r, c int) []float32 {
	out := make([]float32, len(a))
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			out[j*r+i] = a[i*c+j]
		}
	}
	return out
}
