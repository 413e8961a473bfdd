package clip

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"

	"github.com/gosd/gosd/sd/nn"
	"github.com/gosd/gosd/sd/tensor"
)

// Prefix is where SD 1.x single-file checkpoints keep the CLIP text model.
const Prefix = "cond_stage_model.transformer.text_model."

// headDim is the attention head width of every OpenAI CLIP text model; it
// gives the head count when a config has to be inferred from weights.
const headDim = 64

// Config describes a CLIP text transformer.
type Config struct {
	Hidden int          // width of the residual stream (768 for ViT-L/14)
	Layers int          // number of transformer layers (12)
	Heads  int          // attention heads (12)
	FF     int          // MLP inner width (3072)
	Vocab  int          // token embedding rows (49408)
	MaxPos int          // position embedding rows (77)
	Act    tensor.Unary // MLP activation: QuickGELU for OpenAI CLIP
	Eps    float32      // layer-norm epsilon (1e-5)
}

// SD15Config is the text encoder of SD 1.x (OpenAI CLIP ViT-L/14).
func SD15Config() Config {
	return Config{Hidden: 768, Layers: 12, Heads: 12, FF: 3072, Vocab: 49408, MaxPos: 77,
		Act: tensor.QuickGELU, Eps: 1e-5}
}

// Validate reports a config that cannot describe a working model.
func (c Config) Validate() error {
	switch {
	case c.Hidden <= 0 || c.Layers <= 0 || c.Heads <= 0 || c.FF <= 0 || c.Vocab <= 0 || c.MaxPos <= 0:
		return fmt.Errorf("clip config: sizes must be positive: %+v", c)
	case c.Hidden%c.Heads != 0:
		return fmt.Errorf("clip config: hidden size %d is not a multiple of %d heads", c.Hidden, c.Heads)
	case c.Act != tensor.QuickGELU && c.Act != tensor.GELU:
		return fmt.Errorf("clip config: unsupported activation %v", c.Act)
	case !(c.Eps > 0):
		return fmt.Errorf("clip config: layer-norm eps %v must be positive", c.Eps)
	}
	return nil
}

// hfConfig holds the fields gosd reads from a transformers CLIPTextConfig.
type hfConfig struct {
	HiddenSize   *int     `json:"hidden_size"`
	Layers       *int     `json:"num_hidden_layers"`
	Heads        *int     `json:"num_attention_heads"`
	Intermediate *int     `json:"intermediate_size"`
	Vocab        *int     `json:"vocab_size"`
	MaxPos       *int     `json:"max_position_embeddings"`
	HiddenAct    *string  `json:"hidden_act"`
	Eps          *float64 `json:"layer_norm_eps"`
}

// ParseConfig reads a diffusers text_encoder/config.json (a transformers
// CLIPTextConfig). hidden_size, num_hidden_layers, num_attention_heads and
// intermediate_size are required; vocab_size (49408),
// max_position_embeddings (77), hidden_act ("quick_gelu") and
// layer_norm_eps (1e-5) default to CLIP's values.
func ParseConfig(b []byte) (Config, error) {
	var h hfConfig
	if err := json.Unmarshal(b, &h); err != nil {
		return Config{}, fmt.Errorf("clip config: %w", err)
	}
	c := SD15Config()
	for _, f := range []struct {
		name string
		src  *int
		dst  *int
	}{
		{"hidden_size", h.HiddenSize, &c.Hidden},
		{"num_hidden_layers", h.Layers, &c.Layers},
		{"num_attention_heads", h.Heads, &c.Heads},
		{"intermediate_size", h.Intermediate, &c.FF},
	} {
		if f.src == nil {
			return Config{}, fmt.Errorf("clip config: missing %s", f.name)
		}
		*f.dst = *f.src
	}
	if h.Vocab != nil {
		c.Vocab = *h.Vocab
	}
	if h.MaxPos != nil {
		c.MaxPos = *h.MaxPos
	}
	if h.HiddenAct != nil {
		switch *h.HiddenAct {
		case "quick_gelu":
			c.Act = tensor.QuickGELU
		case "gelu":
			c.Act = tensor.GELU
		default:
			return Config{}, fmt.Errorf("clip config: unsupported hidden_act %q", *h.HiddenAct)
		}
	}
	if h.Eps != nil {
		c.Eps = float32(*h.Eps)
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// LoadConfig reads and parses a diffusers text_encoder/config.json.
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("clip config: %w", err)
	}
	c, err := ParseConfig(b)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// InferConfig derives a Config from the weights under prefix: width and
// vocabulary from the token embedding, context length from the position
// embedding, layers by counting encoder.layers.N, MLP width from the first
// layer's fc1, heads as width/64, QuickGELU and eps 1e-5 as in OpenAI CLIP.
func InferConfig(src tensor.Source, prefix string) (Config, error) {
	get := func(name string, dims int) (*tensor.Tensor, error) {
		t, ok := src.Get(prefix + name)
		if !ok {
			return nil, fmt.Errorf("clip: checkpoint has no tensor %q", prefix+name)
		}
		if len(t.Shape) != dims {
			return nil, fmt.Errorf("clip: tensor %q has shape %s, want %d dimensions",
				prefix+name, tensor.ShapeString(t.Shape), dims)
		}
		return t, nil
	}
	c := SD15Config()
	tok, err := get("embeddings.token_embedding.weight", 2)
	if err != nil {
		return Config{}, err
	}
	c.Vocab, c.Hidden = tok.Shape[0], tok.Shape[1]
	pos, err := get("embeddings.position_embedding.weight", 2)
	if err != nil {
		return Config{}, err
	}
	c.MaxPos = pos.Shape[0]
	c.Layers = 0
	for {
		if _, ok := src.Get(prefix + "encoder.layers." + strconv.Itoa(c.Layers) + ".layer_norm1.weight"); !ok {
			break
		}
		c.Layers++
	}
	if c.Layers == 0 {
		return Config{}, fmt.Errorf("clip: checkpoint has no tensor %q", prefix+"encoder.layers.0.layer_norm1.weight")
	}
	fc1, err := get("encoder.layers.0.mlp.fc1.weight", 2)
	if err != nil {
		return Config{}, err
	}
	c.FF = fc1.Shape[0]
	if c.Hidden%headDim != 0 {
		return Config{}, fmt.Errorf("clip: width %d is not a multiple of the head width %d", c.Hidden, headDim)
	}
	c.Heads = c.Hidden / headDim
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Embeddings holds the token and learned position embeddings.
type Embeddings struct {
	TokenEmbedding    *tensor.Tensor // [Vocab, Hidden]
	PositionEmbedding *tensor.Tensor // [MaxPos, Hidden]
}

// SelfAttn is multi-head self-attention with biased projections.
type SelfAttn struct {
	QProj, KProj, VProj, OutProj *nn.Linear
}

// MLP is fc1 -> activation -> fc2.
type MLP struct {
	FC1, FC2 *nn.Linear
}

// Layer is one pre-LN transformer layer.
type Layer struct {
	LayerNorm1 *nn.LayerNorm
	SelfAttn   SelfAttn
	LayerNorm2 *nn.LayerNorm
	MLP        MLP
}

// TextModel is the CLIP text transformer (transformers' CLIPTextModel
// without pooling): embeddings, Layers pre-LN layers with causal
// self-attention, and a final layer norm.
type TextModel struct {
	Config         Config
	Embeddings     Embeddings
	Layers         []Layer
	FinalLayerNorm *nn.LayerNorm
	// SkipFinalNorm makes Encode and EncodeEmbeddings return the chosen
	// layer's output without final_layer_norm (SDXL's conditioning reads
	// the penultimate hidden state as is). False for SD 1.x/2.x.
	SkipFinalNorm bool
}

// clipSkip turns a clip-skip setting into the layer count from the end (0
// means 1), or an error outside 1..Layers.
func (c Config) clipSkip(n int) (int, error) {
	if n == 0 {
		n = 1
	}
	if n < 1 || n > c.Layers {
		return 0, fmt.Errorf("clip: clip skip %d outside 1..%d", n, c.Layers)
	}
	return n, nil
}

// resolveConfig returns a copy of cfg after validating it, or, when cfg is
// nil, the configuration infer finds.
func resolveConfig(cfg *Config, infer func() (Config, error)) (Config, error) {
	if cfg == nil {
		return infer()
	}
	return *cfg, cfg.Validate()
}

// checkTokens checks that the token sequences have equal lengths and ids
// inside the vocabulary.
func checkTokens(tokens [][]int, vocab int) error {
	for b, ts := range tokens {
		if len(ts) != len(tokens[0]) {
			return fmt.Errorf("clip: sequence %d has %d tokens, sequence 0 has %d", b, len(ts), len(tokens[0]))
		}
		for i, id := range ts {
			if id < 0 || id >= vocab {
				return fmt.Errorf("clip: sequence %d token %d: id %d outside 0..%d", b, i, id, vocab-1)
			}
		}
	}
	return nil
}

// Load builds a TextModel from the weights under prefix (Prefix for SD 1.x
// single-file checkpoints). A nil cfg is inferred with InferConfig. Weights
// keep their stored dtype. A stored embeddings.position_ids is ignored:
// positions are always 0..L-1.
func Load(src tensor.Source, prefix string, cfg *Config) (*TextModel, error) {
	c, err := resolveConfig(cfg, func() (Config, error) { return InferConfig(src, prefix) })
	if err != nil {
		return nil, err
	}
	l := nn.NewLoader(src, prefix)
	m := &TextModel{Config: c}
	e := l.Sub("embeddings")
	m.Embeddings.TokenEmbedding = e.Tensor("token_embedding.weight", c.Vocab, c.Hidden)
	m.Embeddings.PositionEmbedding = e.Tensor("position_embedding.weight", c.MaxPos, c.Hidden)
	for i := 0; i < c.Layers; i++ {
		ll := l.Subf("encoder.layers.%d", i)
		a := ll.Sub("self_attn")
		m.Layers = append(m.Layers, Layer{
			LayerNorm1: ll.LayerNorm("layer_norm1", c.Hidden, c.Eps),
			SelfAttn: SelfAttn{
				QProj:   a.Linear("q_proj", c.Hidden, c.Hidden, true),
				KProj:   a.Linear("k_proj", c.Hidden, c.Hidden, true),
				VProj:   a.Linear("v_proj", c.Hidden, c.Hidden, true),
				OutProj: a.Linear("out_proj", c.Hidden, c.Hidden, true),
			},
			LayerNorm2: ll.LayerNorm("layer_norm2", c.Hidden, c.Eps),
			MLP: MLP{
				FC1: ll.Linear("mlp.fc1", c.Hidden, c.FF, true),
				FC2: ll.Linear("mlp.fc2", c.FF, c.Hidden, true),
			},
		})
	}
	m.FinalLayerNorm = l.LayerNorm("final_layer_norm", c.Hidden, c.Eps)
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("clip: %w", err)
	}
	return m, nil
}

// Encode runs the text model on token sequences of equal length L <= MaxPos
// (77 from Tokenizer.Pad77) and returns their embeddings, tokens [B][L] ->
// [B, L, Hidden] f32.
//
// clipSkip selects the layer whose output is used, counted from the end:
// 1 (or 0) is the last layer, 2 the penultimate one (AUTOMATIC1111's
// "Clip skip" for SD 1.x), and so on up to Layers. Either way the result
// passes through final_layer_norm. Layers after the chosen one are not run.
func (m *TextModel) Encode(be tensor.Backend, tokens [][]int, clipSkip int) (out *tensor.Tensor, err error) {
	defer tensor.Recover(&err)
	c := m.Config
	clipSkip, err = c.clipSkip(clipSkip)
	if err != nil {
		return nil, err
	}
	if len(tokens) == 0 {
		return nil, errors.New("clip: no token sequences")
	}
	seq := len(tokens[0])
	if seq == 0 || seq > c.MaxPos {
		return nil, fmt.Errorf("clip: sequence length %d outside 1..%d", seq, c.MaxPos)
	}
	if err := checkTokens(tokens, c.Vocab); err != nil {
		return nil, err
	}
	return m.run(be, m.embed(tokens), clipSkip), nil
}

// TokenEmbeddings returns the token-embedding rows of token sequences of
// equal length, tokens [B][L] -> [B, L, Hidden] f32, without position
// embeddings. Callers may overwrite rows (textual-inversion vectors) and
// pass the result to EncodeEmbeddings.
func (m *TextModel) TokenEmbeddings(tokens [][]int) (*tensor.Tensor, error) {
	c := m.Config
	if len(tokens) == 0 {
		return nil, errors.New("clip: no token sequences")
	}
	if err := checkTokens(tokens, c.Vocab); err != nil {
		return nil, err
	}
	seq, w := len(tokens[0]), c.Hidden
	x := tensor.New(len(tokens), seq, w)
	for b, ts := range tokens {
		for i, id := range ts {
			copy(x.F32[(b*seq+i)*w:][:w], rows(m.Embeddings.TokenEmbedding, id, 1, w))
		}
	}
	return x, nil
}

// EncodeEmbeddings is Encode on token embeddings instead of ids: x is
// [B, L, Hidden] f32 (from TokenEmbeddings, possibly with rows replaced),
// L <= MaxPos. Position embeddings are added to a copy; x is not modified.
// The result equals Encode's for unmodified rows.
func (m *TextModel) EncodeEmbeddings(be tensor.Backend, x *tensor.Tensor, clipSkip int) (out *tensor.Tensor, err error) {
	defer tensor.Recover(&err)
	c := m.Config
	clipSkip, err = c.clipSkip(clipSkip)
	if err != nil {
		return nil, err
	}
	if x == nil {
		return nil, errors.New("clip: no token embeddings")
	}
	if x.DType != tensor.F32 || len(x.Shape) != 3 || x.Shape[2] != c.Hidden || x.Shape[0] == 0 || len(x.F32) != x.Numel() {
		return nil, fmt.Errorf("clip: token embeddings must be f32 [B, L, %d], got %s", c.Hidden, x)
	}
	seq, w := x.Shape[1], c.Hidden
	if seq == 0 || seq > c.MaxPos {
		return nil, fmt.Errorf("clip: sequence length %d outside 1..%d", seq, c.MaxPos)
	}
	h := x.Clone()
	pos := rows(m.Embeddings.PositionEmbedding, 0, seq, w)
	for b := 0; b < x.Shape[0]; b++ {
		for i := 0; i < seq*w; i++ {
			h.F32[b*seq*w+i] += pos[i]
		}
	}
	return m.run(be, h, clipSkip), nil
}

// run: embedded x [B, L, Hidden] -> the clipSkip layer's output after
// final_layer_norm.
func (m *TextModel) run(be tensor.Backend, x *tensor.Tensor, clipSkip int) *tensor.Tensor {
	for i := 0; i < m.Config.Layers-(clipSkip-1); i++ {
		x = m.Layers[i].forward(be, x, m.Config)
	}
	if m.SkipFinalNorm {
		return x
	}
	return m.FinalLayerNorm.Forward(be, x)
}

// embed: tokens [B][L] -> token embedding + position embedding [B, L, Hidden].
func (m *TextModel) embed(tokens [][]int) *tensor.Tensor {
	w := m.Config.Hidden
	seq := len(tokens[0])
	x := tensor.New(len(tokens), seq, w)
	pos := rows(m.Embeddings.PositionEmbedding, 0, seq, w)
	for b, ts := range tokens {
		for i, id := range ts {
			dst := x.F32[(b*seq+i)*w:][:w]
			copy(dst, rows(m.Embeddings.TokenEmbedding, id, 1, w))
			for j, p := range pos[i*w : (i+1)*w] {
				dst[j] += p
			}
		}
	}
	return x
}

// rows returns rows [r, r+n) of a [R, w] weight as float32.
func rows(t *tensor.Tensor, r, n, w int) []float32 {
	if t.DType == tensor.F32 {
		return t.F32[r*w : (r+n)*w]
	}
	return tensor.FromHalf(t.Half[r*w:(r+n)*w], t.DType, n*w).Float32s()
}

// forward: x [B, L, Hidden] -> [B, L, Hidden].
func (l *Layer) forward(be tensor.Backend, x *tensor.Tensor, c Config) *tensor.Tensor {
	h := l.LayerNorm1.Forward(be, x)
	q := l.SelfAttn.QProj.Forward(be, h)
	k := l.SelfAttn.KProj.Forward(be, h)
	v := l.SelfAttn.VProj.Forward(be, h)
	a := nn.Attention(be, q, k, v, c.Heads, true)
	x = nn.AddInPlace(be, x, l.SelfAttn.OutProj.Forward(be, a))
	h = l.LayerNorm2.Forward(be, x)
	h = l.MLP.FC1.Forward(be, h)
	tensor.Must(be.Unary(h, h, c.Act))
	return nn.AddInPlace(be, x, l.MLP.FC2.Forward(be, h))
}
