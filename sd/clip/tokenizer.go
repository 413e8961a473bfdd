// Package clip implements the CLIP tokenizer and the CLIP text transformer
// that Stable Diffusion 1.x uses to turn a prompt into conditioning
// embeddings (OpenAI CLIP ViT-L/14, Radford et al. 2021, "Learning
// Transferable Visual Models From Natural Language Supervision").
package clip

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"
)

// Special token strings of CLIP's vocabulary.
const (
	StartOfText = "<|startoftext|>"
	EndOfText   = "<|endoftext|>"
)

// ContextLength is the sequence length of SD 1.x prompts: start token, up to
// 75 BPE tokens, end token, padding.
const ContextLength = 77

// endOfWord marks the last symbol of a word in CLIP's BPE vocabulary.
const endOfWord = "</w>"

// maxCacheEntries bounds the per-word BPE cache so that a long-running
// server fed arbitrary prompts does not grow without limit.
const maxCacheEntries = 1 << 16

// Tokenizer is CLIP's byte-level BPE tokenizer. It is safe for concurrent use.
type Tokenizer struct {
	// StartID and EndID are the ids of <|startoftext|> and <|endoftext|>
	// (49406 and 49407 in CLIP's vocabulary).
	StartID, EndID int
	// PadID fills Pad77's sequence after the end token; SD 1.x pads with
	// the end token, which is the default.
	PadID int

	vocab    map[string]int
	ranks    map[pair]int
	byteRune [256]rune

	mu    sync.RWMutex
	cache map[string][]int
}

type pair struct{ a, b string }

// LoadTokenizer reads vocab.json (token -> id) and merges.txt (BPE merges in
// priority order, after a "#version" header line) from dir, as found in a
// diffusers tokenizer folder.
func LoadTokenizer(dir string) (*Tokenizer, error) {
	vpath := filepath.Join(dir, "vocab.json")
	vb, err := os.ReadFile(vpath)
	if err != nil {
		return nil, fmt.Errorf("clip tokenizer: %w", err)
	}
	mpath := filepath.Join(dir, "merges.txt")
	mb, err := os.ReadFile(mpath)
	if err != nil {
		return nil, fmt.Errorf("clip tokenizer: %w", err)
	}
	tok, err := NewTokenizer(vb, mb)
	if err != nil {
		var fe *fileError
		if errors.As(err, &fe) {
			return nil, fmt.Errorf("clip tokenizer: %s: %w", filepath.Join(dir, fe.file), fe.err)
		}
		return nil, fmt.Errorf("clip tokenizer: %w", err)
	}
	return tok, nil
}

// fileError ties a parse error to one of the two tokenizer files.
type fileError struct {
	file string
	err  error
}

func (e *fileError) Error() string { return e.file + ": " + e.err.Error() }
func (e *fileError) Unwrap() error { return e.err }

// NewTokenizer builds a Tokenizer from the contents of vocab.json and
// merges.txt. Every merge result must be in the vocabulary, as must the 512
// single-byte symbols (with and without "</w>") and both special tokens.
func NewTokenizer(vocabJSON, merges []byte) (*Tokenizer, error) {
	t := &Tokenizer{cache: map[string][]int{}, ranks: map[pair]int{}}
	if err := json.Unmarshal(vocabJSON, &t.vocab); err != nil {
		return nil, &fileError{"vocab.json", fmt.Errorf("not a JSON object of token ids: %w", err)}
	}
	if len(t.vocab) == 0 {
		return nil, &fileError{"vocab.json", errors.New("empty vocabulary")}
	}
	for s, id := range t.vocab {
		if id < 0 {
			return nil, &fileError{"vocab.json", fmt.Errorf("token %q has negative id %d", s, id)}
		}
	}
	t.byteRune = byteToRune()
	for _, r := range t.byteRune {
		for _, s := range []string{string(r), string(r) + endOfWord} {
			if _, ok := t.vocab[s]; !ok {
				return nil, &fileError{"vocab.json", fmt.Errorf("byte symbol %q missing", s)}
			}
		}
	}
	var ok bool
	if t.StartID, ok = t.vocab[StartOfText]; !ok {
		return nil, &fileError{"vocab.json", fmt.Errorf("special token %s missing", StartOfText)}
	}
	if t.EndID, ok = t.vocab[EndOfText]; !ok {
		return nil, &fileError{"vocab.json", fmt.Errorf("special token %s missing", EndOfText)}
	}
	t.PadID = t.EndID
	if err := t.readMerges(merges); err != nil {
		return nil, &fileError{"merges.txt", err}
	}
	return t, nil
}

func (t *Tokenizer) readMerges(b []byte) error {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	line := 0
	for sc.Scan() {
		line++
		s := strings.TrimRight(sc.Text(), "\r")
		if line == 1 && strings.HasPrefix(s, "#version") {
			continue
		}
		if s == "" {
			continue
		}
		a, b, ok := strings.Cut(s, " ")
		if !ok || a == "" || b == "" || strings.Contains(b, " ") {
			return fmt.Errorf("line %d: want two symbols separated by one space, got %q", line, s)
		}
		if _, ok := t.vocab[a+b]; !ok {
			return fmt.Errorf("line %d: merge result %q is not in vocab.json", line, a+b)
		}
		p := pair{a, b}
		if _, dup := t.ranks[p]; !dup {
			t.ranks[p] = len(t.ranks)
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	if len(t.ranks) == 0 {
		return errors.New("no merges")
	}
	return nil
}

// byteToRune is CLIP's (and GPT-2's) reversible byte -> printable rune map:
// printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100 and
// up, in byte order.
func byteToRune() [256]rune {
	var m [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}

// Encode turns text into BPE token ids, without start, end or padding.
//
// The text is cleaned as CLIP's reference tokenizer does - HTML entities
// unescaped twice, whitespace runs collapsed to one space, ends trimmed,
// lower-cased - then split into words by CLIP's pre-tokenisation pattern and
// each word is byte-pair encoded.
//
// Differences from CLIP's Python tokenizer, all confined to unusual input:
// ftfy.fix_text (mojibake and Unicode repair) is not available in Go and is
// skipped; HTML unescaping uses Go's html.UnescapeString, which differs from
// Python's html.unescape on a few malformed numeric references (Python
// drops references to control characters, Go keeps them); invalid UTF-8
// bytes become U+FFFD, one per run of bad bytes. Literal "<|startoftext|>"
// and "<|endoftext|>" in the text encode to their special ids, as in CLIP.
func (t *Tokenizer) Encode(text string) []int {
	var ids []int
	for _, w := range preTokenize(cleanText(text)) {
		ids = append(ids, t.bpeWord(w)...)
	}
	return ids
}

// Pad77 frames BPE ids as SD 1.x does: the start token, at most 75 ids, the
// end token, then PadID up to 77 tokens. truncated reports whether ids were
// dropped.
func (t *Tokenizer) Pad77(ids []int) (out []int, truncated bool) {
	const body = ContextLength - 2
	if len(ids) > body {
		ids, truncated = ids[:body], true
	}
	out = make([]int, 0, ContextLength)
	out = append(out, t.StartID)
	out = append(out, ids...)
	out = append(out, t.EndID)
	for len(out) < ContextLength {
		out = append(out, t.PadID)
	}
	return out, truncated
}

// bpeWord returns the ids of one pre-tokenised word.
func (t *Tokenizer) bpeWord(w string) []int {
	switch w {
	case StartOfText:
		return []int{t.StartID}
	case EndOfText:
		return []int{t.EndID}
	}
	t.mu.RLock()
	ids, ok := t.cache[w]
	t.mu.RUnlock()
	if ok {
		return ids
	}
	syms := make([]string, 0, len(w))
	for i := 0; i < len(w); i++ {
		syms = append(syms, string(t.byteRune[w[i]]))
	}
	syms[len(syms)-1] += endOfWord
	syms = t.merge(syms)
	ids = make([]int, len(syms))
	for i, s := range syms {
		ids[i] = t.vocab[s] // present: checked at load for bytes and merge results
	}
	t.mu.Lock()
	if len(t.cache) < maxCacheEntries {
		t.cache[w] = ids
	}
	t.mu.Unlock()
	return ids
}

// merge applies BPE: repeatedly join every occurrence, left to right, of the
// adjacent pair with the lowest merge rank until no pair has a rank.
func (t *Tokenizer) merge(syms []string) []string {
	for len(syms) > 1 {
		best, bestRank := pair{}, -1
		for i := 0; i+1 < len(syms); i++ {
			p := pair{syms[i], syms[i+1]}
			if r, ok := t.ranks[p]; ok && (bestRank < 0 || r < bestRank) {
				best, bestRank = p, r
			}
		}
		if bestRank < 0 {
			break
		}
		out := syms[:0:0]
		for i := 0; i < len(syms); {
			if i+1 < len(syms) && syms[i] == best.a && syms[i+1] == best.b {
				out = append(out, best.a+best.b)
				i += 2
			} else {
				out = append(out, syms[i])
				i++
			}
		}
		syms = out
	}
	return syms
}

// isPySpace is Python's str.isspace: Unicode White_Space plus the
// information separators U+001C..U+001F. CLIP's str.strip() uses it while
// its whitespace-collapsing regex uses plain White_Space (unicode.IsSpace).
func isPySpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

// cleanText is CLIP's basic_clean and whitespace_clean followed by lower().
func cleanText(s string) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	s = html.UnescapeString(html.UnescapeString(s))
	s = strings.TrimFunc(s, isPySpace)
	var b strings.Builder
	inSpace := false
	for _, r := range s {
		if unicode.IsSpace(r) {
			if !inSpace {
				b.WriteByte(' ')
			}
			inSpace = true
			continue
		}
		inSpace = false
		b.WriteRune(r)
	}
	return pyLower(strings.TrimFunc(b.String(), isPySpace))
}

// pyLower is Python's str.lower: simple lower-case mapping plus the two
// special cases Python applies, U+0130 -> "i̇" and the final-sigma rule.
func pyLower(s string) string {
	rs := []rune(s)
	var b strings.Builder
	for i, r := range rs {
		switch {
		case r == 0x130:
			b.WriteString("i\u0307")
		case r == 'Σ' && finalSigma(rs, i):
			b.WriteRune('ς')
		default:
			b.WriteRune(unicode.ToLower(r))
		}
	}
	return b.String()
}

// finalSigma is Unicode's Final_Sigma condition: a cased letter before i and
// none after it, skipping case-ignorable characters on both sides.
func finalSigma(rs []rune, i int) bool {
	j := i - 1
	for j >= 0 && caseIgnorable(rs[j]) {
		j--
	}
	if j < 0 || !cased(rs[j]) {
		return false
	}
	j = i + 1
	for j < len(rs) && caseIgnorable(rs[j]) {
		j++
	}
	return j == len(rs) || !cased(rs[j])
}

func cased(r rune) bool {
	return unicode.IsUpper(r) || unicode.IsLower(r) || unicode.IsTitle(r) ||
		unicode.Is(unicode.Other_Lowercase, r) || unicode.Is(unicode.Other_Uppercase, r)
}

func caseIgnorable(r rune) bool {
	switch r {
	case '\'', '.', ':', '^', '`', 0xB7, 0x387, 0x5F4, 0x2018, 0x2019, 0x2024, 0x2027,
		0xFE13, 0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A:
		return true
	}
	return unicode.In(r, unicode.Mn, unicode.Me, unicode.Cf, unicode.Lm, unicode.Sk)
}

// contractions are CLIP's pattern alternatives after the special tokens, in
// the pattern's order.
var contractions = [...]string{"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"}

// preTokenize splits cleaned text like CLIP's pattern
//
//	<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
//
// (Python's regex module), scanned left to right, trying the alternatives in
// order at each position and skipping characters that none matches, which
// after cleaning are only spaces. It is written by hand with the classes
// spelled out: unicode.IsLetter for \p{L}, unicode.IsNumber for \p{N} and
// unicode.IsSpace for \s (the regex module's \s is Unicode White_Space too).
func preTokenize(s string) []string {
	var words []string
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		rest := s[i:]
		switch {
		case unicode.IsSpace(r):
			i += n
			continue
		case strings.HasPrefix(rest, StartOfText):
			words = append(words, StartOfText)
			i += len(StartOfText)
			continue
		case strings.HasPrefix(rest, EndOfText):
			words = append(words, EndOfText)
			i += len(EndOfText)
			continue
		}
		if r == '\'' {
			if c := matchContraction(rest); c != "" {
				words = append(words, c)
				i += len(c)
				continue
			}
		}
		j := i + n
		switch {
		case unicode.IsLetter(r):
			j = scan(s, j, unicode.IsLetter)
		case unicode.IsNumber(r):
			// one digit per word
		default:
			j = scan(s, j, func(r rune) bool {
				return !unicode.IsSpace(r) && !unicode.IsLetter(r) && !unicode.IsNumber(r)
			})
		}
		words = append(words, s[i:j])
		i = j
	}
	return words
}

func matchContraction(s string) string {
	for _, c := range contractions {
		if strings.HasPrefix(s, c) {
			return c
		}
	}
	return ""
}

// scan returns the end of the run of runes satisfying ok starting at i.
func scan(s string, i int, ok func(rune) bool) int {
	for i < len(s) {
		r, n := utf8.DecodeRuneInString(s[i:])
		if !ok(r) {
			break
		}
		i += n
	}
	return i
}
