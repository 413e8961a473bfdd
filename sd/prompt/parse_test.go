package prompt

import (
	"reflect"
	"strings"
	"testing"
)

// w multiplies factors left to right starting from 1.0, in float64, the
// order in which A1111 applies bracket multipliers to a piece.
func w(fs ...float64) float64 {
	v := 1.0
	for _, f := range fs {
		v *= f
	}
	return v
}

var sq = 1 / w(1.1) // A1111's square-bracket multiplier, 1/1.1 in float64

// TestParseAttention checks pieces worked out by hand from A1111's
// parse_prompt_attention rules (and its doctest values, which are exact
// Python floats).
func TestParseAttention(t *testing.T) {
	brk := Piece{"BREAK", -1}
	cases := []struct {
		in   string
		want []Piece
	}{
		{"normal text", []Piece{{"normal text", 1}}},
		{"", []Piece{{"", 1}}},
		{"an (important) word", []Piece{{"an ", 1}, {"important", 1.1}, {" word", 1}}},
		{"((word))", []Piece{{"word", w(1.1, 1.1)}}},
		{"(((word)))", []Piece{{"word", w(1.1, 1.1, 1.1)}}},
		{"(word:1.3)", []Piece{{"word", 1.3}}},
		{"(word: 1.5 )", []Piece{{"word", 1.5}}},
		{"(word:.5)", []Piece{{"word", 0.5}}},
		{"(word:+2)", []Piece{{"word", 2}}},
		{"(word:-1)", []Piece{{"word", -1}}},
		{"(word:0)", []Piece{{"word", 0}}},
		{"[word]", []Piece{{"word", sq}}},
		{"[[word]]", []Piece{{"word", w(sq, sq)}}},
		{`\(literal\]`, []Piece{{"(literal]", 1}}},
		{`\[a\) \\ b`, []Piece{{`[a) \ b`, 1}}},
		{`a\b`, []Piece{{"ab", 1}}}, // a lone backslash is dropped
		{`\(x)`, []Piece{{"(x)", 1}}},
		{"(unbalanced", []Piece{{"unbalanced", 1.1}}},
		{"[unbalanced", []Piece{{"unbalanced", sq}}},
		{"a (b", []Piece{{"a ", 1}, {"b", 1.1}}},
		{"((a) b", []Piece{{"a", w(1.1, 1.1)}, {" b", 1.1}}},
		{"[(a", []Piece{{"a", w(1.1, sq)}}},                // unclosed round first, then square
		{"(a [b", []Piece{{"a ", 1.1}, {"b", w(1.1, sq)}}}, // 1.1*(1/1.1) is exactly 1
		{"a) b]", []Piece{{"a) b]", 1}}},
		{"(unnecessary)(parens)", []Piece{{"unnecessaryparens", 1.1}}},
		{"a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", []Piece{
			{"a ", 1}, {"house", 1.5730000000000004}, {" ", 1.1}, {"on", 1}, {" a ", 1.1},
			{"hill", 0.55}, {", sun, ", 1.1}, {"sky", 1.4641000000000006}, {".", 1.1}}},
		{"([a] b)", []Piece{{"a", w(sq, 1.1)}, {" b", 1.1}}},
		{"(a (b:2) c)", []Piece{{"a ", 1.1}, {"b", w(2, 1.1)}, {" c", 1.1}}},
		{"[a (b) c]", []Piece{{"a ", sq}, {"b", w(1.1, sq)}, {" c", sq}}},
		// stray colons and empty or missing weights are text
		{"a:b", []Piece{{"a:b", 1}}},
		{"(a:b)", []Piece{{"a:b", 1.1}}},
		{"(word:)", []Piece{{"word:", 1.1}}},
		{"(:1.2)", []Piece{{"", 1}}}, // only an empty piece: nothing to weight
		{"word:1.2)", []Piece{{"word:1.2)", 1}}},
		{"(a:1.2:3)", []Piece{{"a:1.2", 3}}}, // ":1.2" is text, ":3)" closes
		{"[a:1.5]", []Piece{{"a:1.5", sq}}},
		// BREAK
		{"a BREAK b", []Piece{{"a", 1}, brk, {"b", 1}}},
		{"a\n BREAK\tb", []Piece{{"a", 1}, brk, {"b", 1}}},
		{"BREAK", []Piece{{"", 1}, brk, {"", 1}}},
		{"a BREAK BREAK b", []Piece{{"a", 1}, brk, {"", 1}, brk, {"b", 1}}},
		{"a BREAKfast, aBREAK, break", []Piece{{"a BREAKfast, aBREAK, break", 1}}},
		{"a,BREAK,b", []Piece{{"a,", 1}, brk, {",b", 1}}},
		{"(BREAK)", []Piece{{"", 1.1}, {"BREAK", -1.1}, {"", 1.1}}},
		{"(x) BREAK (y)", []Piece{{"x", 1.1}, {"", 1}, brk, {"", 1}, {"y", 1.1}}},
	}
	for _, c := range cases {
		got, err := ParseAttention(c.in)
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q:\n got %v\nwant %v", c.in, got, c.want)
		}
	}
	if (Piece{"BREAK", -1.1}).IsBreak() || !brk.IsBreak() {
		t.Error("IsBreak")
	}
}

func TestParseAttentionBadWeight(t *testing.T) {
	for _, in := range []string{"(a:1.2.3)", "(a:.)", "(a:-.)"} {
		_, err := ParseAttention(in)
		if err == nil || !strings.Contains(err.Error(), "not a number") {
			t.Errorf("%q: err %v, want a bad-weight error", in, err)
		}
	}
}

func TestExtractTags(t *testing.T) {
	rest, tags := ExtractTags("a <lora:foo:0.8> b<hypernet:h:1>, <lyco:bar:0.5:0.7> <lora:> <x y:1>")
	if want := "a  b,  <lora:> <x y:1>"; rest != want {
		t.Errorf("rest %q, want %q", rest, want)
	}
	wantTags := []Tag{{"lora", []string{"foo", "0.8"}}, {"hypernet", []string{"h", "1"}}, {"lyco", []string{"bar", "0.5", "0.7"}}}
	if !reflect.DeepEqual(tags, wantTags) {
		t.Fatalf("tags %v, want %v", tags, wantTags)
	}
	refs, err := LoraRefs(tags)
	if err != nil {
		t.Fatal(err)
	}
	if want := []LoraRef{{"foo", 0.8, 0.8}, {"bar", 0.5, 0.7}}; !reflect.DeepEqual(refs, want) {
		t.Errorf("refs %v, want %v", refs, want)
	}
	for _, c := range []struct {
		tag  string
		want LoraRef
	}{
		{"<lora:a>", LoraRef{"a", 1, 1}},
		{"<lora:a:-1>", LoraRef{"a", -1, -1}},
		{"<lora:a: 0.5 >", LoraRef{"a", 0.5, 0.5}},
		{"<lora:a:unet=0.3>", LoraRef{"a", 1, 0.3}},
		{"<lora:a:te=0.2>", LoraRef{"a", 0.2, 0.2}},
		{"<lora:a:0.4:unet=0.9>", LoraRef{"a", 0.4, 0.9}},
		{"<lora:a:0.4:0.6:16>", LoraRef{"a", 0.4, 0.6}}, // dyn dim ignored
	} {
		_, tags := ExtractTags(c.tag)
		refs, err := LoraRefs(tags)
		if err != nil || len(refs) != 1 || refs[0] != c.want {
			t.Errorf("%s: %v %v, want %v", c.tag, refs, err, c.want)
		}
	}
	for _, bad := range []string{"<lora:a:x>", "<lora::1>", "<lora:a:1:y>", "<lora:a:unet=z>", "<lora:a:>"} {
		_, tags := ExtractTags(bad)
		if _, err := LoraRefs(tags); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("%s: err %v, want one naming the tag", bad, err)
		}
	}
}
