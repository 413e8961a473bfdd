package clip

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
)

// repoRoot walks up from the working directory to the folder holding go.mod.
func repoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// sharedPath returns a path inside ../shared beside the repository root,
// skipping the test when it is missing.
func sharedPath(t testing.TB, rel ...string) string {
	t.Helper()
	p := filepath.Join(append([]string{repoRoot(t), "..", "shared"}, rel...)...)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared test material missing: %v", err)
	}
	return p
}

var (
	sd15TokOnce sync.Once
	sd15Tok     *Tokenizer
	sd15TokErr  error
)

// sd15Tokenizer loads the real SD 1.5 tokenizer once per test binary.
func sd15Tokenizer(t testing.TB) *Tokenizer {
	t.Helper()
	dir := sharedPath(t, "models", "sd15", "tokenizer")
	sd15TokOnce.Do(func() { sd15Tok, sd15TokErr = LoadTokenizer(dir) })
	if sd15TokErr != nil {
		t.Fatal(sd15TokErr)
	}
	return sd15Tok
}

type goldenMeta struct {
	Prompt       string `json:"prompt"`
	Negative     string `json:"negative"`
	TokensCond   []int  `json:"tokens_cond"`
	TokensUncond []int  `json:"tokens_uncond"`
}

func readGoldenMeta(t testing.TB) goldenMeta {
	t.Helper()
	b, err := os.ReadFile(sharedPath(t, "golden", "sd15-dev-fox", "meta.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m goldenMeta
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if len(m.TokensCond) != ContextLength || len(m.TokensUncond) != ContextLength {
		t.Fatalf("meta.json token lists have %d and %d entries", len(m.TokensCond), len(m.TokensUncond))
	}
	return m
}

func TestTokenizerGoldenPrompts(t *testing.T) {
	tok := sd15Tokenizer(t)
	m := readGoldenMeta(t)
	for _, c := range []struct {
		text string
		want []int
	}{{m.Prompt, m.TokensCond}, {m.Negative, m.TokensUncond}} {
		got, trunc := tok.Pad77(tok.Encode(c.text))
		if trunc || !slices.Equal(got, c.want) {
			t.Errorf("%q:\n got %v (truncated %v)\nwant %v", c.text, got, trunc, c.want)
		}
	}
}

// TestTokenizerHandWorked checks ids derived by hand from vocab.json and
// merges.txt: a single letter is its byte symbol with "</w>" ("a</w>" = 320),
// common words are single vocabulary entries ("cat</w>" = 2368,
// "dog</w>" = 1929), a comma is ",</w>" = 267, a lone digit "1</w>" = 272,
// and the merges "c a" then "ca t</w>" build "cat</w>" from its bytes.
func TestTokenizerHandWorked(t *testing.T) {
	tok := sd15Tokenizer(t)
	for _, s := range []string{"a</w>", "cat</w>", "dog</w>", ",</w>", "1</w>", "'t</w>", "don</w>"} {
		if _, ok := tok.vocab[s]; !ok {
			t.Fatalf("vocab lacks %q", s)
		}
	}
	cases := []struct {
		text string
		want []int
	}{
		{"a", []int{320}},
		{"A", []int{320}},
		{"cat, dog", []int{2368, 267, 1929}},
		{"  CAT\t\n dog ", []int{2368, 1929}},
		{"11", []int{272, 272}}, // digits are split one per word
		{"don't", []int{tok.vocab["don</w>"], tok.vocab["'t</w>"]}},
		{"", nil},
	}
	for _, c := range cases {
		if got := tok.Encode(c.text); !slices.Equal(got, c.want) {
			t.Errorf("Encode(%q) = %v, want %v", c.text, got, c.want)
		}
	}
}

// TestTokenizerTricky compares against testdata/clip/tokens.json, written by
// testdata/clip/ref_tokenize.py: an independent Python implementation of
// CLIP's tokenizer (standard library html.unescape, str.strip and str.lower,
// the `regex` module running CLIP's original pattern with \p classes) over
// the prompts in testdata/clip/cases.json. Its golden_cond and golden_uncond
// entries reproduce meta.json's ids, which checks the script itself.
func TestTokenizerTricky(t *testing.T) {
	tok := sd15Tokenizer(t)
	root := repoRoot(t)
	var cases []struct {
		Name     string  `json:"name"`
		Text     *string `json:"text"`
		BytesHex string  `json:"bytes_hex"`
	}
	var want []struct {
		Name string `json:"name"`
		IDs  []int  `json:"ids"`
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"cases.json", &cases}, {"tokens.json", &want}} {
		b, err := os.ReadFile(filepath.Join(root, "testdata", "clip", f.name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, f.v); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
	}
	if len(cases) != len(want) || len(cases) < 15 {
		t.Fatalf("%d cases, %d expectations", len(cases), len(want))
	}
	for i, c := range cases {
		text := ""
		if c.Text != nil {
			text = *c.Text
		} else {
			b, err := hex.DecodeString(c.BytesHex)
			if err != nil {
				t.Fatal(err)
			}
			text = string(b)
		}
		if want[i].Name != c.Name {
			t.Fatalf("case %d: name %q vs %q", i, c.Name, want[i].Name)
		}
		got := tok.Encode(text)
		if !slices.Equal(got, want[i].IDs) && !(len(got) == 0 && len(want[i].IDs) == 0) {
			t.Errorf("%s: Encode(%q)\n got %v\nwant %v", c.Name, text, got, want[i].IDs)
		}
	}
}

func TestPad77(t *testing.T) {
	tok := sd15Tokenizer(t)
	empty, trunc := tok.Pad77(tok.Encode(""))
	if trunc || len(empty) != 77 || empty[0] != 49406 || empty[1] != 49407 || empty[76] != 49407 {
		t.Errorf("empty prompt: %v truncated %v", empty, trunc)
	}

	// 30 x "a photo of a cat, " is 6 ids per repeat, 180 in all: the first
	// 75 survive and end mid-phrase, then the end token.
	long := tok.Encode(strings.Repeat("a photo of a cat, ", 30))
	if len(long) != 180 {
		t.Fatalf("long prompt has %d ids, want 180", len(long))
	}
	got, trunc := tok.Pad77(long)
	if !trunc || len(got) != 77 || got[0] != tok.StartID || got[76] != tok.EndID ||
		!slices.Equal(got[1:76], long[:75]) {
		t.Errorf("long prompt: truncated %v, got %v", trunc, got)
	}

	// Exactly 75 ids fit without truncation.
	exact, trunc := tok.Pad77(long[:75])
	if trunc || !slices.Equal(exact, got) {
		t.Errorf("75 ids: truncated %v, got %v", trunc, exact)
	}
	short, trunc := tok.Pad77([]int{320, 2368})
	want := append([]int{49406, 320, 2368}, slices.Repeat([]int{49407}, 74)...)
	if trunc || !slices.Equal(short, want) {
		t.Errorf("short: %v", short)
	}
}

func TestTokenizerConcurrent(t *testing.T) {
	tok := sd15Tokenizer(t)
	want := tok.Encode("a watercolor painting of a fox in a snowy forest")
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				if got := tok.Encode("a watercolor painting of a fox in a snowy forest"); !slices.Equal(got, want) {
					errs <- "mismatch"
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// miniVocab builds a tiny but valid vocabulary: the 512 byte symbols, the
// merge results given, and the two special tokens.
func miniVocab(extra ...string) map[string]int {
	v := map[string]int{}
	for _, r := range byteToRune() {
		v[string(r)] = len(v)
	}
	for _, r := range byteToRune() {
		v[string(r)+endOfWord] = len(v)
	}
	for _, s := range extra {
		v[s] = len(v)
	}
	v[StartOfText] = len(v)
	v[EndOfText] = len(v)
	return v
}

func writeTokenizer(t *testing.T, vocab any, merges string) string {
	t.Helper()
	dir := t.TempDir()
	if vocab != nil {
		var b []byte
		switch v := vocab.(type) {
		case string:
			b = []byte(v)
		default:
			var err error
			if b, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dir, "vocab.json"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if merges != "-" {
		if err := os.WriteFile(filepath.Join(dir, "merges.txt"), []byte(merges), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func TestLoadTokenizerMini(t *testing.T) {
	// merges: "a b" then "ab c</w>" so "abc" -> "abc</w>"; "ab" alone stays
	// "a" + "b</w>" because "a b</w>" is not a merge.
	dir := writeTokenizer(t, miniVocab("ab", "abc</w>"), "#version: 0.2\na b\nab c</w>\n")
	tok, err := LoadTokenizer(dir)
	if err != nil {
		t.Fatal(err)
	}
	v := tok.vocab
	if got, want := tok.Encode("ABC ab"), []int{v["abc</w>"], v["a"], v["b</w>"]}; !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if tok.StartID != v[StartOfText] || tok.EndID != v[EndOfText] || tok.PadID != tok.EndID {
		t.Errorf("special ids %d %d %d", tok.StartID, tok.EndID, tok.PadID)
	}
}

func TestLoadTokenizerErrors(t *testing.T) {
	good := miniVocab("ab")
	noEnd := miniVocab("ab")
	delete(noEnd, EndOfText)
	noByte := miniVocab("ab")
	delete(noByte, "z</w>")
	cases := []struct {
		name   string
		vocab  any
		merges string
		want   []string
	}{
		{"no vocab", nil, "a b\n", []string{"vocab.json", "no such file"}},
		{"no merges", good, "-", []string{"merges.txt", "no such file"}},
		{"bad json", "{\"a\": ", "a b\n", []string{"vocab.json", "JSON"}},
		{"json list", "[1, 2]", "a b\n", []string{"vocab.json", "JSON"}},
		{"empty vocab", "{}", "a b\n", []string{"vocab.json", "empty"}},
		{"no end token", noEnd, "a b\n", []string{"vocab.json", EndOfText}},
		{"no byte symbol", noByte, "a b\n", []string{"vocab.json", "z</w>"}},
		{"bad merge line", good, "#version: 0.2\na b\nabc\n", []string{"merges.txt", "line 3"}},
		{"three symbols", good, "a b c\n", []string{"merges.txt", "line 1"}},
		{"unknown result", good, "a b\nb c\n", []string{"merges.txt", "line 2", `"bc"`}},
		{"empty merges", good, "#version: 0.2\n", []string{"merges.txt", "no merges"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := LoadTokenizer(writeTokenizer(t, c.vocab, c.merges))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
	_, err := LoadTokenizer(filepath.Join(t.TempDir(), "missing"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing dir: %v", err)
	}
}

func TestPreTokenize(t *testing.T) {
	cases := []struct {
		in   string
		want []string
	}{
		{"don't 'sup ''s", []string{"don", "'t", "'s", "up", "''", "s"}},
		{"x1.5y", []string{"x", "1", ".", "5", "y"}},
		{"!<|endoftext|>", []string{"!<|", "endoftext", "|>"}},
		{"<|endoftext|><|startoftext|>", []string{EndOfText, StartOfText}},
		{"héllo wörld", []string{"héllo", "wörld"}},
		{"a\u0307b", []string{"a", "\u0307", "b"}},
		{"", nil},
	}
	for _, c := range cases {
		if got := preTokenize(c.in); !slices.Equal(got, c.want) {
			t.Errorf("preTokenize(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestCleanText(t *testing.T) {
	cases := []struct{ in, want string }{
		{"  Hello   World \n", "hello world"},
		{"&amp;lt;b&amp;gt;", "<b>"},
		{"\x1cA\u00a0B\x1f", "a b"},
		{"ΟΔΟΣ ΣΑΣ.", "οδος σας."},
		{"İ", "i\u0307"},
		{"a\xffb", "a\ufffdb"},
	}
	for _, c := range cases {
		if got := cleanText(c.in); got != c.want {
			t.Errorf("cleanText(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

// decodeIDs inverts BPE ids: vocabulary strings joined, "</w>" read as a
// word break, byte symbols mapped back to bytes. Special tokens come back
// as their literal text.
func decodeIDs(tok *Tokenizer, ids []int) string {
	inv := make(map[int]string, len(tok.vocab))
	for s, id := range tok.vocab {
		inv[id] = s
	}
	runeByte := map[rune]byte{}
	for b, r := range byteToRune() {
		runeByte[r] = byte(b)
	}
	var out []byte
	for _, id := range ids {
		s := inv[id]
		if s == StartOfText || s == EndOfText {
			out = append(out, s+" "...)
			continue
		}
		word, eow := strings.CutSuffix(s, endOfWord)
		for _, r := range word {
			out = append(out, runeByte[r])
		}
		if eow {
			out = append(out, ' ')
		}
	}
	return string(out)
}

// FuzzTokenizer checks that Encode never panics and loses nothing: decoding
// its ids gives back the pre-tokenised words of the cleaned text.
func FuzzTokenizer(f *testing.F) {
	for _, s := range []string{"a watercolor painting of a fox", "don't STOP!!", "東京 😀 ΟΔΟΣ",
		"&amp;lt;3 \x1c x", "a\xff\xfeb", "", "<|endoftext|>x", strings.Repeat("ab1'", 40)} {
		f.Add(s)
	}
	tok := sd15Tokenizer(f)
	f.Fuzz(func(t *testing.T, s string) {
		ids := tok.Encode(s)
		want := ""
		for _, w := range preTokenize(cleanText(s)) {
			want += w + " "
		}
		if got := decodeIDs(tok, ids); got != want {
			t.Errorf("Encode(%q) decodes to %q, want %q", s, got, want)
		}
	})
}
