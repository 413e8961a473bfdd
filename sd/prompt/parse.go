// Package prompt reads prompts the way AUTOMATIC1111's web UI does and turns
// them into CLIP text embeddings: attention emphasis ("(word)", "[word]",
// "(word:1.3)"), escaped brackets, BREAK, extra-network tags such as
// "<lora:name:0.8>", textual-inversion embeddings referenced by file name,
// and prompts longer than 75 tokens encoded as several 77-token chunks.
//
// Not supported yet: A1111's prompt editing and alternation ("[a:b:0.5]",
// "[a|b]") and composable diffusion ("AND"); such text is read as ordinary
// emphasis syntax.
package prompt

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"unicode"
)

// Piece is a run of prompt text with its attention weight. A BREAK keyword
// is a Piece with Text "BREAK" and Weight -1 (as in A1111, where a BREAK
// inside brackets gets its weight multiplied and is then read as the word
// "BREAK").
type Piece struct {
	Text   string
	Weight float64
}

// IsBreak reports whether p is a BREAK marker.
func (p Piece) IsBreak() bool { return p.Text == "BREAK" && p.Weight == -1 }

// Emphasis multipliers of A1111: "(" multiplies by 1.1, "[" divides by 1.1
// (1/1.1 computed in float64 arithmetic, as Python does).
var (
	roundMultiplier  = 1.1
	squareMultiplier = 1 / roundMultiplier
)

// attentionRE splits a prompt into A1111's attention tokens, alternatives in
// A1111's order (leftmost-first, like Python's re): escaped brackets and
// backslashes, a lone backslash, opening brackets, ":weight)" with optional
// spaces, closing brackets, plain text, and a lone colon.
var attentionRE = regexp.MustCompile(`\\\(|\\\)|\\\[|\\\]|\\\\|\\|\(|\[|:` + pySpace + `*([+-]?[.0-9]+)` + pySpace + `*\)|\)|\]|[^\\()\[\]:]+|:`)

// pySpace is Python's str.isspace set as a regexp class.
const pySpace = `[\t\n\v\f\r \x{1c}-\x{1f}\x{85}\p{Z}]`

// ParseAttention parses A1111 emphasis syntax into pieces of text and
// weight, exactly as AUTOMATIC1111's parse_prompt_attention:
//
//   - "(abc)" multiplies abc's weight by 1.1, "[abc]" divides it by 1.1,
//     "(abc:1.3)" multiplies it by 1.3; brackets nest multiplicatively;
//   - "\(", "\)", "\[", "\]" and "\\" are the literal characters;
//   - a closing bracket without an opener is plain text (kept as ")");
//     an opener never closed applies its multiplier to everything after it;
//     a ":" not followed by a number and ")" is plain text;
//   - "BREAK" as a whole word (with surrounding spaces dropped) becomes a
//     break marker (see Piece);
//   - neighbouring pieces of identical weight are merged, and an empty
//     prompt gives one empty piece of weight 1.
//
// The only error is a weight that is not a number, such as "(a:1.2.3)"
// (A1111 fails on it too).
func ParseAttention(text string) ([]Piece, error) {
	var res []Piece
	var round, square []int
	multiply := func(start int, m float64) {
		for p := start; p < len(res); p++ {
			res[p].Weight *= m
		}
	}
	for _, m := range attentionRE.FindAllStringSubmatchIndex(text, -1) {
		tok := text[m[0]:m[1]]
		hasWeight := m[2] >= 0
		switch {
		case strings.HasPrefix(tok, `\`):
			res = append(res, Piece{tok[1:], 1})
		case tok == "(":
			round = append(round, len(res))
		case tok == "[":
			square = append(square, len(res))
		case hasWeight && len(round) > 0:
			w, err := strconv.ParseFloat(text[m[2]:m[3]], 64)
			if err != nil {
				return nil, fmt.Errorf("prompt: emphasis weight %q is not a number", text[m[2]:m[3]])
			}
			multiply(round[len(round)-1], w)
			round = round[:len(round)-1]
		case tok == ")" && len(round) > 0:
			multiply(round[len(round)-1], roundMultiplier)
			round = round[:len(round)-1]
		case tok == "]" && len(square) > 0:
			multiply(square[len(square)-1], squareMultiplier)
			square = square[:len(square)-1]
		default:
			for i, part := range splitBreak(tok) {
				if i > 0 {
					res = append(res, Piece{"BREAK", -1})
				}
				res = append(res, Piece{part, 1})
			}
		}
	}
	for _, pos := range round {
		multiply(pos, roundMultiplier)
	}
	for _, pos := range square {
		multiply(pos, squareMultiplier)
	}
	if len(res) == 0 {
		res = []Piece{{"", 1}}
	}
	for i := 0; i+1 < len(res); {
		if res[i].Weight == res[i+1].Weight {
			res[i].Text += res[i+1].Text
			res = append(res[:i+1], res[i+2:]...)
		} else {
			i++
		}
	}
	return res, nil
}

// isPyWord is Python's Unicode \w: letters, numbers and '_'.
func isPyWord(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsNumber(r) }

// isPySpace is Python's str.isspace.
func isPySpace(r rune) bool {
	switch {
	case r >= '\t' && r <= '\r', r == ' ', r >= 0x1c && r <= 0x1f, r == 0x85:
		return true
	}
	return unicode.Is(unicode.Z, r)
}

// splitBreak splits s at the word BREAK and the whitespace around it, as
// Python's re.split(r"\s*\bBREAK\b\s*", s) does.
func splitBreak(s string) []string {
	if !strings.Contains(s, "BREAK") {
		return []string{s}
	}
	rs := []rune(s)
	var parts []string
	last := 0
	for i := 0; i < len(rs); {
		k := i
		for k < len(rs) && isPySpace(rs[k]) {
			k++
		}
		end := k + 5
		ok := end <= len(rs) && string(rs[k:end]) == "BREAK" &&
			(k == 0 || !isPyWord(rs[k-1])) && (end == len(rs) || !isPyWord(rs[end]))
		if !ok {
			i++
			continue
		}
		for end < len(rs) && isPySpace(rs[end]) {
			end++
		}
		parts = append(parts, string(rs[last:i]))
		last, i = end, end
	}
	return append(parts, string(rs[last:]))
}

// Tag is an extra-network tag "<kind:arg1:arg2...>" found in a prompt.
type Tag struct {
	Kind string   // "lora", "lyco", "hypernet", ...
	Args []string // the ":"-separated items after the kind
}

// tagRE is A1111's extra-network pattern: "<" word ":" anything but ">" ">".
var tagRE = regexp.MustCompile(`<([\p{L}\p{N}_]+):([^>]+)>`)

// ExtractTags removes every extra-network tag from text, as A1111 does
// before reading emphasis (the tag is deleted, surrounding spaces stay), and
// returns the remaining text and the tags in order.
func ExtractTags(text string) (string, []Tag) {
	var tags []Tag
	rest := tagRE.ReplaceAllStringFunc(text, func(s string) string {
		m := tagRE.FindStringSubmatch(s)
		tags = append(tags, Tag{Kind: m[1], Args: strings.Split(m[2], ":")})
		return ""
	})
	return rest, tags
}

// LoraRef is a "<lora:name:weight>" request. A1111's forms are all read:
// "<lora:name>" (weight 1), "<lora:name:w>" (both weights w),
// "<lora:name:te:unet>", and named "te=", "unet=" items.
type LoraRef struct {
	Name string
	TE   float64 // text-encoder multiplier
	UNet float64 // UNet multiplier
}

// LoraRefs turns "lora" and "lyco" tags into LoraRefs; other kinds are
// ignored. A weight that is not a number is an error naming the tag.
func LoraRefs(tags []Tag) ([]LoraRef, error) {
	var out []LoraRef
	for _, t := range tags {
		if t.Kind != "lora" && t.Kind != "lyco" {
			continue
		}
		var pos []string
		named := map[string]string{}
		for _, a := range t.Args {
			if k, v, ok := strings.Cut(a, "="); ok && !strings.Contains(v, "=") {
				named[k] = v
			} else {
				pos = append(pos, a)
			}
		}
		tagText := "<" + t.Kind + ":" + strings.Join(t.Args, ":") + ">"
		if len(pos) == 0 || pos[0] == "" {
			return nil, fmt.Errorf("prompt: %s has no network name", tagText)
		}
		num := func(s string) (float64, error) {
			v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
			if err != nil {
				return 0, fmt.Errorf("prompt: %s: weight %q is not a number", tagText, s)
			}
			return v, nil
		}
		r := LoraRef{Name: pos[0], TE: 1}
		var err error
		if v, ok := named["te"]; ok {
			r.TE, err = num(v)
		} else if len(pos) > 1 {
			r.TE, err = num(pos[1])
		}
		if err != nil {
			return nil, err
		}
		r.UNet = r.TE
		if v, ok := named["unet"]; ok {
			r.UNet, err = num(v)
		} else if len(pos) > 2 {
			r.UNet, err = num(pos[2])
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}
