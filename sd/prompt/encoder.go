package prompt

import (
	"errors"
	"fmt"
	"sort"

	"github.com/gosd/gosd/sd/clip"
	"github.com/gosd/gosd/sd/tensor"
)

// chunkLength is the number of prompt tokens per 77-token chunk.
const chunkLength = clip.ContextLength - 2

// DefaultCommaBacktrack is A1111's "comma_padding_backtrack" default: when a
// chunk fills up and its last comma is at most this many tokens back, the
// text after that comma moves to the next chunk.
const DefaultCommaBacktrack = 20

// A1111's emphasis modes.
const (
	// EmphasisOriginal multiplies token vectors by their weights and
	// restores the chunk's mean (A1111's default).
	EmphasisOriginal = "original"
	// EmphasisNoNorm multiplies token vectors by their weights only.
	EmphasisNoNorm = "nonorm"
	// EmphasisNone reads the prompt literally: brackets are text, there are
	// no weights and no BREAK.
	EmphasisNone = "none"
)

// Chunk is one 77-token piece of an encoded prompt.
type Chunk struct {
	Tokens  []int     // [77]: start token, 75 prompt or end tokens, end token
	Weights []float64 // [77] emphasis multipliers (1 for start, end and padding)
	Fixes   []Fix     // textual-inversion vectors to place into the chunk
}

// Fix places an embedding's vectors at Tokens[Offset : Offset+N] (those
// token ids are placeholders, 0).
type Fix struct {
	Offset    int
	Embedding *Embedding
}

// Encoder turns A1111-syntax prompts into CLIP embeddings.
type Encoder struct {
	Tok  *clip.Tokenizer
	Text *clip.TextModel
	// Embeddings are the textual-inversion embeddings prompts may use; nil
	// means none.
	Embeddings *Embeddings
	// CommaBacktrack is A1111's comma_padding_backtrack (0 disables it).
	CommaBacktrack int
	// Emphasis is A1111's "emphasis" setting: EmphasisOriginal (the
	// default, also for ""), EmphasisNoNorm or EmphasisNone.
	Emphasis string

	comma  int
	lookup map[int][]embIDs // first token id -> candidates, longest first
}

type embIDs struct {
	ids []int
	emb *Embedding
}

// NewEncoder builds an Encoder with A1111's defaults. The embeddings'
// width must be the text model's; embs may be nil.
func NewEncoder(tok *clip.Tokenizer, text *clip.TextModel, embs *Embeddings) (*Encoder, error) {
	if tok == nil || text == nil {
		return nil, errors.New("prompt: encoder needs a tokenizer and a text model")
	}
	if embs != nil && embs.Width != text.Config.Hidden {
		return nil, fmt.Errorf("prompt: embeddings are %d wide, the text model %d", embs.Width, text.Config.Hidden)
	}
	e := &Encoder{Tok: tok, Text: text, Embeddings: embs, CommaBacktrack: DefaultCommaBacktrack, lookup: map[int][]embIDs{}}
	if ids := tok.Encode(","); len(ids) == 1 {
		e.comma = ids[0]
	} else {
		e.comma = -1
	}
	if embs != nil {
		for _, em := range embs.list {
			ids := tok.Encode(em.Name)
			if len(ids) == 0 {
				continue
			}
			e.lookup[ids[0]] = append(e.lookup[ids[0]], embIDs{ids, em})
		}
		for k, l := range e.lookup {
			sort.SliceStable(l, func(i, j int) bool { return len(l[i].ids) > len(l[j].ids) })
			e.lookup[k] = l
		}
	}
	return e, nil
}

// findEmbedding returns the embedding whose name's tokens start at
// toks[pos], longest name first, and how many tokens the name spans.
func (e *Encoder) findEmbedding(toks []int, pos int) (*Embedding, int) {
	for _, c := range e.lookup[toks[pos]] {
		if pos+len(c.ids) > len(toks) {
			continue
		}
		match := true
		for i, id := range c.ids {
			if toks[pos+i] != id {
				match = false
				break
			}
		}
		if match {
			return c.emb, len(c.ids)
		}
	}
	return nil, 0
}

// Chunks splits text (extra-network tags already removed) into 77-token
// chunks as A1111's tokenize_line does: emphasis pieces are tokenized one by
// one; a BREAK starts a new chunk; when a chunk holds 75 tokens and the
// next token is not a comma, the tokens after the chunk's last comma move to
// the next chunk if that comma is at most CommaBacktrack tokens back; an
// embedding name is replaced by placeholders for its vectors and never
// split across chunks. The last chunk is padded with end tokens. An empty
// text gives one chunk.
//
// One deliberate difference: when comma backtracking moves an embedding to
// the next chunk, its vectors move with it (A1111 leaves them behind).
func (e *Encoder) Chunks(text string) ([]Chunk, error) {
	var pieces []Piece
	switch e.Emphasis {
	case EmphasisNone:
		pieces = []Piece{{text, 1}}
	case "", EmphasisOriginal, EmphasisNoNorm:
		var err error
		if pieces, err = ParseAttention(text); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("prompt: unknown emphasis mode %q (want %s, %s or %s)", e.Emphasis, EmphasisOriginal, EmphasisNoNorm, EmphasisNone)
	}
	var chunks []Chunk
	var toks []int
	var ws []float64
	var fixes []Fix
	lastComma := -1
	next := func() {
		c := Chunk{Tokens: make([]int, 0, clip.ContextLength), Weights: make([]float64, 0, clip.ContextLength)}
		c.Tokens = append(append(c.Tokens, e.Tok.StartID), toks...)
		c.Weights = append(append(c.Weights, 1), ws...)
		for len(c.Tokens) < clip.ContextLength-1 {
			c.Tokens = append(c.Tokens, e.Tok.EndID)
			c.Weights = append(c.Weights, 1)
		}
		c.Tokens = append(c.Tokens, e.Tok.EndID)
		c.Weights = append(c.Weights, 1)
		for _, f := range fixes {
			c.Fixes = append(c.Fixes, Fix{f.Offset + 1, f.Embedding})
		}
		chunks = append(chunks, c)
		toks, ws, fixes, lastComma = nil, nil, nil, -1
	}
	for _, p := range pieces {
		if p.IsBreak() {
			next()
			continue
		}
		ids := e.Tok.Encode(p.Text)
		for pos := 0; pos < len(ids); {
			id := ids[pos]
			if id == e.comma {
				lastComma = len(toks)
			} else if e.CommaBacktrack != 0 && len(toks) == chunkLength && lastComma != -1 && len(toks)-lastComma <= e.CommaBacktrack {
				brk := lastComma + 1
				relT := append([]int(nil), toks[brk:]...)
				relW := append([]float64(nil), ws[brk:]...)
				var keep, rel []Fix
				for _, f := range fixes {
					if f.Offset >= brk {
						rel = append(rel, Fix{f.Offset - brk, f.Embedding})
					} else {
						keep = append(keep, f)
					}
				}
				toks, ws, fixes = toks[:brk], ws[:brk], keep
				next()
				toks, ws, fixes = relT, relW, rel
			}
			if len(toks) == chunkLength {
				next()
			}
			emb, n := e.findEmbedding(ids, pos)
			if emb == nil {
				toks = append(toks, id)
				ws = append(ws, p.Weight)
				pos++
				continue
			}
			if len(toks)+emb.N() > chunkLength {
				next()
			}
			fixes = append(fixes, Fix{len(toks), emb})
			for i := 0; i < emb.N(); i++ {
				toks = append(toks, 0)
				ws = append(ws, p.Weight)
			}
			pos += n
		}
	}
	if len(toks) > 0 || len(chunks) == 0 {
		next()
	}
	return chunks, nil
}

// EmptyChunk is the chunk of the empty prompt: start token, 76 end tokens,
// weights 1. A1111 pads shorter prompts of a batch with it.
func (e *Encoder) EmptyChunk() Chunk {
	c := Chunk{Tokens: make([]int, clip.ContextLength), Weights: make([]float64, clip.ContextLength)}
	for i := range c.Tokens {
		c.Tokens[i], c.Weights[i] = e.Tok.EndID, 1
	}
	c.Tokens[0] = e.Tok.StartID
	return c
}

// EncodeChunks runs the text model on chunks (one batch) and returns their
// embeddings [len(chunks), 77, C] f32, with textual-inversion vectors placed
// and emphasis applied per chunk (see Emphasize).
func (e *Encoder) EncodeChunks(be tensor.Backend, chunks []Chunk, clipSkip int) (*tensor.Tensor, error) {
	if len(chunks) == 0 {
		return nil, errors.New("prompt: no chunks to encode")
	}
	ids := make([][]int, len(chunks))
	for i, c := range chunks {
		ids[i] = c.Tokens
	}
	x, err := e.Text.TokenEmbeddings(ids)
	if err != nil {
		return nil, err
	}
	w := e.Text.Config.Hidden
	L := clip.ContextLength
	for b, c := range chunks {
		for _, f := range c.Fixes {
			v := f.Embedding.Vectors
			if v.Shape[1] != w {
				return nil, fmt.Errorf("prompt: embedding %s is %d wide, the text model %d", f.Embedding.Name, v.Shape[1], w)
			}
			if f.Offset < 1 || f.Offset+v.Shape[0] > L-1 {
				return nil, fmt.Errorf("prompt: embedding %s at %d does not fit in a chunk", f.Embedding.Name, f.Offset)
			}
			copy(x.F32[(b*L+f.Offset)*w:], v.F32)
		}
	}
	z, err := e.Text.EncodeEmbeddings(be, x, clipSkip)
	if err != nil {
		return nil, err
	}
	for b, c := range chunks {
		zc := z.F32[b*L*w : (b+1)*L*w]
		if e.Emphasis == EmphasisNoNorm {
			for i := range zc {
				zc[i] = float32(float64(zc[i]) * c.Weights[i/w])
			}
			continue
		}
		Emphasize(zc, c.Weights, w)
	}
	return z, nil
}

// Emphasize applies A1111's default ("Original") emphasis to one chunk's
// embeddings z [L*C] in place: every token's vector is multiplied by its
// weight, then the whole chunk is rescaled so that its mean over all L*C
// values equals the mean before weighting. Means are taken in float64.
// All-one weights leave z unchanged.
func Emphasize(z []float32, weights []float64, width int) {
	allOne := true
	for _, w := range weights {
		allOne = allOne && w == 1
	}
	if allOne {
		return
	}
	var before, after float64
	for i, v := range z {
		before += float64(v)
		after += float64(v) * weights[i/width]
	}
	if after == 0 {
		return
	}
	s := before / after // ratio of means: the counts cancel
	for i, v := range z {
		z[i] = float32(float64(v) * weights[i/width] * s)
	}
}

// Encode reads text as A1111 does and returns its embedding
// [1, 77*k, C] f32 (k chunks concatenated along the sequence) and the LoRA
// requests of its "<lora:...>" tags, which are removed from the text (other
// extra-network tags are removed and ignored).
func (e *Encoder) Encode(be tensor.Backend, text string, clipSkip int) (*tensor.Tensor, []LoraRef, error) {
	rest, tags := ExtractTags(text)
	refs, err := LoraRefs(tags)
	if err != nil {
		return nil, nil, err
	}
	chunks, err := e.Chunks(rest)
	if err != nil {
		return nil, nil, err
	}
	z, err := e.EncodeChunks(be, chunks, clipSkip)
	if err != nil {
		return nil, nil, err
	}
	return z.Reshape(1, len(chunks)*clip.ContextLength, e.Text.Config.Hidden), refs, nil
}

// EncodeCFG encodes a prompt and its negative prompt for classifier-free
// guidance and returns [2, 77*k, C] f32 (negative first, then prompt) with
// the prompt's LoRA requests. The one with fewer chunks is padded with
// encodings of the empty chunk, as A1111 does with its "pad prompt/negative
// prompt" option and within a batch. Extra-network tags are read from the
// prompt only; the negative prompt is encoded as written, as in A1111.
func (e *Encoder) EncodeCFG(be tensor.Backend, prompt, negative string, clipSkip int) (*tensor.Tensor, []LoraRef, error) {
	rest, tags := ExtractTags(prompt)
	refs, err := LoraRefs(tags)
	if err != nil {
		return nil, nil, err
	}
	pos, err := e.Chunks(rest)
	if err != nil {
		return nil, nil, err
	}
	neg, err := e.Chunks(negative)
	if err != nil {
		return nil, nil, fmt.Errorf("negative prompt: %w", err)
	}
	for len(pos) < len(neg) {
		pos = append(pos, e.EmptyChunk())
	}
	for len(neg) < len(pos) {
		neg = append(neg, e.EmptyChunk())
	}
	z, err := e.EncodeChunks(be, append(neg, pos...), clipSkip)
	if err != nil {
		return nil, nil, err
	}
	return z.Reshape(2, len(pos)*clip.ContextLength, e.Text.Config.Hidden), refs, nil
}

// SameLength pads the shorter of two embeddings [B, 77*k, C] and
// [B, 77*m, C] with copies of empty ([1, 77, C], the encoded EmptyChunk)
// along the sequence so both have max(k, m) chunks. Inputs of equal
// length are returned as they are.
func SameLength(a, b, empty *tensor.Tensor) (*tensor.Tensor, *tensor.Tensor, error) {
	if len(a.Shape) != 3 || len(b.Shape) != 3 || a.Shape[2] != b.Shape[2] || a.Shape[0] != b.Shape[0] {
		return nil, nil, fmt.Errorf("prompt: cannot pad %s and %s to one length", a, b)
	}
	L, C := clip.ContextLength, a.Shape[2]
	if len(empty.Shape) != 3 || empty.Shape[0] != 1 || empty.Shape[1] != L || empty.Shape[2] != C {
		return nil, nil, fmt.Errorf("prompt: empty chunk is %s, want [1, %d, %d]", empty, L, C)
	}
	if a.Shape[1]%L != 0 || b.Shape[1]%L != 0 {
		return nil, nil, fmt.Errorf("prompt: lengths %d and %d are not multiples of %d", a.Shape[1], b.Shape[1], L)
	}
	pad := func(t *tensor.Tensor, n int) *tensor.Tensor {
		B, S := t.Shape[0], t.Shape[1]
		out := tensor.New(B, n, C)
		for i := 0; i < B; i++ {
			copy(out.F32[i*n*C:], t.F32[i*S*C:(i+1)*S*C])
			for p := S; p < n; p += L {
				copy(out.F32[(i*n+p)*C:], empty.F32)
			}
		}
		return out
	}
	n := max(a.Shape[1], b.Shape[1])
	if a.Shape[1] < n {
		a = pad(a, n)
	}
	if b.Shape[1] < n {
		b = pad(b, n)
	}
	return a, b, nil
}
