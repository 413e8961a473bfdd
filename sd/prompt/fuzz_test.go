package prompt

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseAttention checks that any text parses without panicking, and
// that the pieces' text is the input with syntax characters removed: every
// rune of the output appears in order in the input.
func FuzzParseAttention(f *testing.F) {
	for _, s := range []string{"", "a (b:1.2) [c] BREAK d", `\(x\) \\ (((`, "))]]::", "(a:1e5)", "<lora:x:1> (BREAK)", "(a:+.5)[b:]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		pieces, err := ParseAttention(s)
		if err != nil {
			if !strings.Contains(err.Error(), "not a number") {
				t.Fatalf("%q: unexpected error %v", s, err)
			}
			return
		}
		if len(pieces) == 0 {
			t.Fatalf("%q: no pieces", s)
		}
		if !utf8.ValidString(s) {
			return
		}
		rest := s
		for _, p := range pieces {
			if p.IsBreak() {
				continue
			}
			for _, r := range p.Text {
				i := strings.IndexRune(rest, r)
				if i < 0 && !(p.Text == "BREAK") {
					t.Fatalf("%q: piece text %q is not a subsequence of the input", s, p.Text)
				}
				if i >= 0 {
					rest = rest[i+len(string(r)):]
				}
			}
		}
		_, _ = ExtractTags(s)
	})
}

// FuzzChunks checks that any prompt chunks without panicking into 77-token
// chunks whose embedding placeholders fit.
func FuzzChunks(f *testing.F) {
	for _, s := range []string{"", "a, b, c BREAK zqx-style", strings.Repeat("cat, zqx ", 40), strings.Repeat("(a:1.1), ", 50)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		e := newEncoder(t, &Embedding{Name: "zqx-style", Vectors: vec(5, 64, 1)}, &Embedding{Name: "zqx", Vectors: vec(1, 64, 2)})
		chunks, err := e.Chunks(s)
		if err != nil {
			return
		}
		for _, c := range chunks {
			if len(c.Tokens) != 77 || len(c.Weights) != 77 || c.Tokens[0] != e.Tok.StartID || c.Tokens[76] != e.Tok.EndID {
				t.Fatalf("%q: bad chunk %v", s, c.Tokens)
			}
			for _, fx := range c.Fixes {
				if fx.Offset < 1 || fx.Offset+fx.Embedding.N() > 76 || c.Tokens[fx.Offset] != 0 {
					t.Fatalf("%q: fix %+v does not fit", s, fx)
				}
			}
		}
	})
}
