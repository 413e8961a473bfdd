package prompt

import (
	"math"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/gosd/gosd/sd/clip"
	"github.com/gosd/gosd/sd/internal/testckpt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

var (
	tokOnce sync.Once
	tok     *clip.Tokenizer
	tokErr  error

	tinyOnce sync.Once
	tinySrc  tensor.Source
	tinyText *clip.TextModel
	tinyErr  error
)

// sd15Tokenizer is the real SD 1.5 CLIP tokenizer from ../shared.
func sd15Tokenizer(t *testing.T) *clip.Tokenizer {
	t.Helper()
	dir := filepath.Join(testckpt.SharedDir(t), "models", "sd15", "tokenizer")
	tokOnce.Do(func() { tok, tokErr = clip.LoadTokenizer(dir) })
	if tokErr != nil {
		t.Fatal(tokErr)
	}
	return tok
}

// tinyModel is the text model of the tiny random SD 1.5 test model
// (vocabulary 49408, width 64, 2 layers).
func tinyModel(t *testing.T) (tensor.Source, *clip.TextModel) {
	t.Helper()
	tinyOnce.Do(func() {
		s, err := testmodel.NewSource(testmodel.Options{Size: "tiny", DType: tensor.F32, Seed: 5})
		if err != nil {
			tinyErr = err
			return
		}
		// The generator's layer norms have zero bias, which makes every
		// token's output mean zero; give the final one a bias so that
		// emphasis rescaling (a ratio of means) is well conditioned, as in
		// real CLIP.
		over := tensor.MapSource{}
		for _, n := range s.Names() {
			over[n], _ = s.Get(n)
		}
		bias := tensor.New(64)
		for i := range bias.F32 {
			bias.F32[i] = 0.2 + 0.01*float32(i%7)
		}
		over[clip.Prefix+"final_layer_norm.bias"] = bias
		tinySrc = over
		tinyText, tinyErr = clip.Load(over, clip.Prefix, nil)
	})
	if tinyErr != nil {
		t.Fatal(tinyErr)
	}
	return tinySrc, tinyText
}

func newEncoder(t *testing.T, embs ...*Embedding) *Encoder {
	t.Helper()
	_, m := tinyModel(t)
	set, err := NewEmbeddings(m.Config.Hidden, embs...)
	if err != nil {
		t.Fatal(err)
	}
	e, err := NewEncoder(sd15Tokenizer(t), m, set)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// words returns n copies of "cat" (one token each) separated by spaces.
func words(n int) string { return strings.TrimSpace(strings.Repeat("cat ", n)) }

func TestChunking(t *testing.T) {
	e := newEncoder(t)
	tk := e.Tok
	cat, dog := tk.Encode("cat"), tk.Encode("dog")
	comma := tk.Encode(",")
	if len(cat) != 1 || len(dog) != 1 || len(comma) != 1 || len(tk.Encode(words(80))) != 80 {
		t.Fatalf("cat %v dog %v comma %v: expected single tokens", cat, dog, comma)
	}
	C, D, K, S, E := cat[0], dog[0], comma[0], tk.StartID, tk.EndID
	// body builds an expected 77-token chunk from its body tokens.
	body := func(ids ...int) []int {
		out := append([]int{S}, ids...)
		for len(out) < 77 {
			out = append(out, E)
		}
		return out
	}
	rep := func(id, n int) []int {
		out := make([]int, n)
		for i := range out {
			out[i] = id
		}
		return out
	}
	cat70comma := append(rep(C, 70), K)
	cases := []struct {
		name      string
		text      string
		backtrack int
		want      [][]int
	}{
		{"empty", "", 20, [][]int{body()}},
		{"75 tokens fit one chunk", words(75), 20, [][]int{body(rep(C, 75)...)}},
		{"76 tokens need two", words(76), 20, [][]int{body(rep(C, 75)...), body(C)}},
		{"151 tokens need three", words(151), 20, [][]int{body(rep(C, 75)...), body(rep(C, 75)...), body(C)}},
		// The chunk fills at 75 tokens with its last comma 5 tokens back:
		// the 4 cats after that comma move to the next chunk.
		{"comma backtrack", words(70) + ", " + words(10), 20,
			[][]int{body(cat70comma...), body(rep(C, 10)...)}},
		{"comma backtrack off", words(70) + ", " + words(10), 0,
			[][]int{body(append(cat70comma, rep(C, 4)...)...), body(rep(C, 6)...)}},
		// comma 25 tokens back: too far, no backtracking
		{"comma too far back", words(50) + ", " + words(30), 20,
			[][]int{body(append(append(rep(C, 50), K), rep(C, 24)...)...), body(rep(C, 6)...)}},
		// comma exactly 20 back: moves
		{"comma 20 back", words(55) + ", " + words(30), 20,
			[][]int{body(append(rep(C, 55), K)...), body(rep(C, 30)...)}},
		// a comma arriving as the 76th token starts the next chunk
		{"comma as 76th token", words(75) + ", dog", 20, [][]int{body(rep(C, 75)...), body(K, D)}},
		{"BREAK", "cat BREAK dog", 20, [][]int{body(C), body(D)}},
		{"BREAK at start", "BREAK dog", 20, [][]int{body(), body(D)}},
		{"BREAK resets the comma", "cat, BREAK " + words(80), 20,
			[][]int{body(C, K), body(rep(C, 75)...), body(rep(C, 5)...)}},
		{"(BREAK) is a word", "cat (BREAK)", 20, [][]int{body(append([]int{C}, tk.Encode("BREAK")...)...)}},
	}
	for _, c := range cases {
		e.CommaBacktrack = c.backtrack
		chunks, err := e.Chunks(c.text)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if len(chunks) != len(c.want) {
			t.Errorf("%s: %d chunks, want %d", c.name, len(chunks), len(c.want))
			continue
		}
		for i, ch := range chunks {
			if len(ch.Tokens) != 77 || len(ch.Weights) != 77 {
				t.Fatalf("%s: chunk %d has %d tokens, %d weights", c.name, i, len(ch.Tokens), len(ch.Weights))
			}
			for j := range ch.Tokens {
				if ch.Tokens[j] != c.want[i][j] {
					t.Errorf("%s: chunk %d token %d = %d, want %d", c.name, i, j, ch.Tokens[j], c.want[i][j])
					break
				}
			}
		}
	}
	e.CommaBacktrack = DefaultCommaBacktrack

	// Weights follow the pieces; start, end and padding weigh 1.
	chunks, err := e.Chunks("(cat) [dog] (cat:1.5), dog")
	if err != nil {
		t.Fatal(err)
	}
	wantW := []float64{1, 1.1, sq, 1.5, 1, 1, 1}
	for i, wv := range wantW {
		if chunks[0].Weights[i] != wv {
			t.Errorf("weight %d = %v, want %v", i, chunks[0].Weights[i], wv)
		}
	}
	for i := len(wantW); i < 77; i++ {
		if chunks[0].Weights[i] != 1 {
			t.Errorf("padding weight %d = %v", i, chunks[0].Weights[i])
		}
	}
	// Backtracking carries the weights of the moved tokens.
	chunks, err = e.Chunks(words(70) + ", (" + words(10) + ":1.3)")
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 2 || chunks[1].Weights[1] != 1.3 || chunks[1].Weights[10] != 1.3 || chunks[1].Weights[11] != 1 || chunks[0].Weights[72] != 1 {
		t.Errorf("weights after backtracking: %v / %v", chunks[0].Weights[68:74], chunks[1].Weights[:12])
	}
}

func vec(n, c int, seed float64) *tensor.Tensor {
	v := tensor.New(n, c)
	for i := range v.F32 {
		v.F32[i] = float32(math.Sin(seed + float64(i)*0.37))
	}
	return v
}

func TestChunkingEmbeddings(t *testing.T) {
	three := &Embedding{Name: "zqx-style", Vectors: vec(3, 64, 1)}
	one := &Embedding{Name: "zqx", Vectors: vec(1, 64, 2)}
	e := newEncoder(t, three, one)
	C := e.Tok.Encode("cat")[0]
	chunks, err := e.Chunks("a zqx-style cat, (zqx)")
	if err != nil {
		t.Fatal(err)
	}
	ch := chunks[0]
	a := e.Tok.Encode("a")[0]
	if want := []int{e.Tok.StartID, a, 0, 0, 0, C}; !slices.Equal(ch.Tokens[:6], want) {
		t.Errorf("tokens %v, want %v", ch.Tokens[:6], want)
	}
	if len(ch.Fixes) != 2 || ch.Fixes[0].Offset != 2 || ch.Fixes[0].Embedding != three ||
		ch.Fixes[1].Offset != 7 || ch.Fixes[1].Embedding != one || ch.Tokens[7] != 0 || ch.Weights[7] != 1.1 {
		t.Errorf("fixes %+v, tokens %v", ch.Fixes, ch.Tokens[:9])
	}
	// An embedding that does not fit in the chunk's room starts the next.
	chunks, err = e.Chunks(words(73) + " zqx-style")
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 2 || len(chunks[0].Fixes) != 0 || len(chunks[1].Fixes) != 1 || chunks[1].Fixes[0].Offset != 1 ||
		chunks[0].Tokens[74] != e.Tok.EndID {
		t.Errorf("embedding at the chunk edge: %d chunks, fixes %+v / %+v", len(chunks), chunks[0].Fixes, chunks[len(chunks)-1].Fixes)
	}
	// Comma backtracking moves an embedding with its tokens.
	chunks, err = e.Chunks(words(70) + ", zqx " + words(10))
	if err != nil {
		t.Fatal(err)
	}
	if len(chunks) != 2 || len(chunks[0].Fixes) != 0 || len(chunks[1].Fixes) != 1 || chunks[1].Fixes[0].Offset != 1 {
		t.Errorf("backtracked embedding: fixes %+v / %+v", chunks[0].Fixes, chunks[1].Fixes)
	}
}

func maxAbs(a, b []float32) float64 {
	d := 0.0
	for i := range a {
		d = math.Max(d, math.Abs(float64(a[i])-float64(b[i])))
	}
	return d
}

// TestEmphasis checks A1111's default emphasis on the tiny text model:
// "(cat) [dog]" has the tokens of "cat dog"; its embedding must be the
// plain embedding with each token's vector times its weight, rescaled by
// mean(plain)/mean(weighted) over the chunk, and the chunk's mean must be
// unchanged.
func TestEmphasis(t *testing.T) {
	e := newEncoder(t)
	be := tensor.NewRef()
	plain, _, err := e.Encode(be, "cat dog", 1)
	if err != nil {
		t.Fatal(err)
	}
	got, _, err := e.Encode(be, "(cat) (dog:0.5)", 1)
	if err != nil {
		t.Fatal(err)
	}
	C := e.Text.Config.Hidden
	if !tensor.SameShape(got.Shape, []int{1, 77, C}) {
		t.Fatalf("shape %v", got.Shape)
	}
	weights := make([]float64, 77)
	for i := range weights {
		weights[i] = 1
	}
	weights[1], weights[2] = 1.1, 0.5
	var m0, m1 float64
	for i, v := range plain.F32 {
		m0 += float64(v)
		m1 += float64(v) * weights[i/C]
	}
	var d, mean float64
	for i, v := range plain.F32 {
		want := float64(v) * weights[i/C] * m0 / m1
		d = math.Max(d, math.Abs(float64(got.F32[i])-want))
		mean += float64(got.F32[i])
	}
	t.Logf("scale %.6f, max abs diff %.2e, means %.6e -> %.6e", m0/m1, d, m0/float64(77*C), mean/float64(77*C))
	if d > 1e-6 {
		t.Errorf("emphasis differs from the hand computation by %.2e", d)
	}
	if math.Abs(mean-m0) > 1e-4*math.Abs(m0)+1e-4 {
		t.Errorf("chunk sum %.6e after emphasis, %.6e before", mean, m0)
	}
	if math.Abs(m0/m1-1) < 1e-4 {
		t.Errorf("rescale factor %v is too close to 1 for a meaningful test", m0/m1)
	}
	// Token 1 is really scaled relative to token 3 (both unweighted).
	r1 := float64(got.F32[C]) / float64(plain.F32[C])
	r3 := float64(got.F32[3*C]) / float64(plain.F32[3*C])
	if math.Abs(r1/r3-1.1) > 1e-5 {
		t.Errorf("token 1 / token 3 ratio %v, want 1.1", r1/r3)
	}
}

// TestTextualInversion checks that an embedding's vectors replace exactly the
// token-embedding rows of its name: encoding "a zqx-style cat" must equal a
// plain encoding of token ids whose embedding rows were overwritten with the
// vectors in a copy of the model.
func TestTextualInversion(t *testing.T) {
	src, m := tinyModel(t)
	emb := &Embedding{Name: "zqx-style", Vectors: vec(2, 64, 3)}
	e := newEncoder(t, emb)
	be := tensor.NewRef()
	got, _, err := e.Encode(be, "a zqx-style cat", 2)
	if err != nil {
		t.Fatal(err)
	}
	// The model with rows 100 and 101 replaced.
	over := tensor.MapSource{}
	for _, n := range src.Names() {
		over[n], _ = src.Get(n)
	}
	name := clip.Prefix + "embeddings.token_embedding.weight"
	tokW := over[name].ToF32().Clone()
	C := m.Config.Hidden
	copy(tokW.F32[100*C:], emb.Vectors.F32)
	over[name] = tokW
	m2, err := clip.Load(over, clip.Prefix, nil)
	if err != nil {
		t.Fatal(err)
	}
	ids := []int{e.Tok.StartID, e.Tok.Encode("a")[0], 100, 101, e.Tok.Encode("cat")[0]}
	for len(ids) < 77 {
		ids = append(ids, e.Tok.EndID)
	}
	want, err := m2.Encode(be, [][]int{ids}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if d := maxAbs(got.F32, want.F32); d != 0 {
		t.Errorf("textual inversion differs from the rewritten model by %.2e", d)
	}
	plain, _, _ := e.Encode(be, "a cat", 2)
	if d := maxAbs(got.F32[:2*C], plain.F32[:2*C]); d != 0 {
		t.Errorf("tokens before the embedding changed by %.2e", d)
	}
	if d := maxAbs(got.F32[2*C:3*C], plain.F32[2*C:3*C]); d < 1e-3 {
		t.Errorf("the embedding's position barely changed (%.2e)", d)
	}
}

// TestLongPromptCFG checks multi-chunk encoding: chunks are encoded
// independently and concatenated; the shorter negative is padded with the
// empty chunk's encoding.
func TestLongPromptCFG(t *testing.T) {
	e := newEncoder(t)
	be := tensor.NewCPU()
	C := e.Text.Config.Hidden
	long := words(70) + ", " + words(10) + " BREAK dog"
	z, refs, err := e.EncodeCFG(be, long+" <lora:style:0.6>", "blurry", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(refs) != 1 || refs[0] != (LoraRef{"style", 0.6, 0.6}) {
		t.Errorf("refs %v", refs)
	}
	if !tensor.SameShape(z.Shape, []int{2, 3 * 77, C}) {
		t.Fatalf("shape %v, want [2, 231, %d]", z.Shape, C)
	}
	cond, _, err := e.Encode(be, long, 1)
	if err != nil {
		t.Fatal(err)
	}
	neg, _, err := e.Encode(be, "blurry", 1)
	if err != nil {
		t.Fatal(err)
	}
	empty, err := e.EncodeChunks(be, []Chunk{e.EmptyChunk()}, 1)
	if err != nil {
		t.Fatal(err)
	}
	empty2, _, _ := e.Encode(be, "", 1)
	if d := maxAbs(empty.F32, empty2.F32); d != 0 {
		t.Errorf("empty chunk differs from the empty prompt by %.2e", d)
	}
	n := 3 * 77 * C
	if d := maxAbs(z.F32[n:], cond.F32); d > 1e-6 {
		t.Errorf("cond half differs from Encode by %.2e", d)
	}
	if !tensor.SameShape(cond.Shape, []int{1, 231, C}) || !tensor.SameShape(neg.Shape, []int{1, 77, C}) {
		t.Fatalf("shapes %v %v", cond.Shape, neg.Shape)
	}
	a, b, err := SameLength(neg, cond, empty)
	if err != nil {
		t.Fatal(err)
	}
	if b != cond || !tensor.SameShape(a.Shape, cond.Shape) {
		t.Fatalf("SameLength shapes %v %v", a.Shape, b.Shape)
	}
	if d := maxAbs(z.F32[:n], a.F32); d > 1e-6 {
		t.Errorf("padded negative differs from EncodeCFG's by %.2e", d)
	}
	if d := maxAbs(a.F32[77*C:2*77*C], empty.F32); d != 0 {
		t.Errorf("padding is not the empty chunk (%.2e)", d)
	}
	// Each chunk is encoded on its own: the second chunk equals encoding its
	// text alone.
	second, _, _ := e.Encode(be, words(10), 1)
	if d := maxAbs(cond.F32[77*C:2*77*C], second.F32); d > 1e-6 {
		t.Errorf("chunk 2 differs from its text encoded alone by %.2e", d)
	}
	if _, _, err := SameLength(neg, tensor.New(1, 70, C), empty); err == nil {
		t.Error("SameLength accepted a length that is not a multiple of 77")
	}
}

// TestEmphasisModes checks A1111's other emphasis settings: "nonorm"
// multiplies without rescaling, "none" reads brackets and BREAK as text.
func TestEmphasisModes(t *testing.T) {
	e := newEncoder(t)
	be := tensor.NewRef()
	C := e.Text.Config.Hidden
	plain, _, err := e.Encode(be, "cat dog", 1)
	if err != nil {
		t.Fatal(err)
	}
	e.Emphasis = EmphasisNoNorm
	got, _, err := e.Encode(be, "(cat) (dog:0.5)", 1)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range plain.F32 {
		wt := 1.0
		switch i / C {
		case 1:
			wt = 1.1
		case 2:
			wt = 0.5
		}
		if want := float32(float64(v) * wt); got.F32[i] != want {
			t.Fatalf("nonorm element %d = %v, want %v", i, got.F32[i], want)
		}
	}
	e.Emphasis = EmphasisNone
	chunks, err := e.Chunks("(cat) BREAK [dog:2]")
	if err != nil {
		t.Fatal(err)
	}
	want := e.Tok.Encode("(cat) BREAK [dog:2]")
	if len(chunks) != 1 || !slices.Equal(chunks[0].Tokens[1:1+len(want)], want) || chunks[0].Weights[2] != 1 {
		t.Errorf("none: %d chunks, tokens %v, want %v", len(chunks), chunks[0].Tokens[:len(want)+2], want)
	}
	e.Emphasis = "bogus"
	if _, err := e.Chunks("x"); err == nil || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("bad mode: %v", err)
	}
}
