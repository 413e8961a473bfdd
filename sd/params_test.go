package sd

import (
	"strings"
	"testing"
)

// TestInfotextFormat: the exact text AUTOMATIC1111 writes for the same
// settings (its "parameters" PNG chunk).
func TestInfotextFormat(t *testing.T) {
	p := Params{Prompt: "a fox", Negative: "blurry", Steps: 20, Sampler: "euler_a", Schedule: "karras", CFG: 7,
		Seed: 42, Width: 512, Height: 768, ClipSkip: 2, RNG: "cpu", Model: "v1-5-pruned-emaonly", ModelHash: "6ce0161689"}
	want := "a fox\nNegative prompt: blurry\n" +
		"Steps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x768, " +
		"Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, RNG: CPU, Version: gosd " + Version
	if got := p.Infotext(); got != want {
		t.Errorf("Infotext =\n%q\nwant\n%q", got, want)
	}
	// Defaults are left out (no negative line, normal schedule, clip skip 1, cuda noise).
	p = Params{Prompt: "a fox", Steps: 4, Sampler: "dpmpp_2m", Schedule: "normal", CFG: 1.5, Seed: 0, Width: 64,
		Height: 64, ClipSkip: 1, RNG: "cuda"}
	want = "a fox\nSteps: 4, Sampler: DPM++ 2M, CFG scale: 1.5, Seed: 0, Size: 64x64, Version: gosd " + Version
	if got := p.Infotext(); got != want {
		t.Errorf("Infotext =\n%q\nwant\n%q", got, want)
	}
}

// TestInfotextRoundTrip: ParseInfotext reads back what Infotext writes,
// including quoted values with commas, colons and quotes, and multi-line
// prompts.
func TestInfotextRoundTrip(t *testing.T) {
	base := Params{Steps: 20, Sampler: "euler_a", Schedule: "normal", CFG: 7, Seed: 42, Width: 512, Height: 512,
		ClipSkip: 1, RNG: "cuda"}
	cases := []struct {
		name string
		mod  func(*Params)
		want map[string]string // keys that must read back (besides Steps, Seed, Size)
	}{
		{"plain", func(p *Params) { p.Prompt = "a fox" },
			map[string]string{"Prompt": "a fox", "Sampler": "Euler a", "CFG scale": "7"}},
		{"commas and colons in prompts", func(p *Params) {
			p.Prompt, p.Negative = "a fox, red: bright, (detailed:1.2)", "blurry, low quality: jpeg"
		}, map[string]string{"Prompt": "a fox, red: bright, (detailed:1.2)", "Negative prompt": "blurry, low quality: jpeg"}},
		{"multi-line prompt and negative", func(p *Params) {
			p.Prompt, p.Negative = "a fox\nin the snow\n\nBREAK at dawn", "blurry\ndark"
		}, map[string]string{"Prompt": "a fox\nin the snow\n\nBREAK at dawn", "Negative prompt": "blurry\ndark"}},
		{"empty prompt", func(p *Params) { p.Prompt = "" }, map[string]string{"Prompt": ""}},
		{"prompt with key-like text", func(p *Params) { p.Prompt = "Steps: 3, Seed: 9" },
			map[string]string{"Prompt": "Steps: 3, Seed: 9", "Steps": "20", "Seed": "42"}},
		{"model name with comma", func(p *Params) { p.Prompt, p.Model = "x", "my, model.safetensors" },
			map[string]string{"Model": "my, model.safetensors", "Version": "gosd " + Version}},
		{"model name with colon and quote", func(p *Params) { p.Prompt, p.Model = "x", `c:"weird": name` },
			map[string]string{"Model": `c:"weird": name`}},
		{"model name with newline", func(p *Params) { p.Prompt, p.Model = "x", "two\nlines" },
			map[string]string{"Model": "two\nlines", "Prompt": "x"}},
		{"plain model name", func(p *Params) { p.Prompt, p.Model, p.ModelHash = "x", "sd15.ckpt", "0123456789" },
			map[string]string{"Model": "sd15.ckpt", "Model hash": "0123456789"}},
		{"every sampler label", func(p *Params) { p.Prompt, p.Sampler, p.Schedule = "x", "dpmpp_2m_sde", "karras" },
			map[string]string{"Sampler": "DPM++ 2M SDE", "Schedule type": "Karras"}},
		{"cfg, seed and size", func(p *Params) {
			p.Prompt, p.CFG, p.Seed, p.Width, p.Height = "x", 4.25, 4294967295, 1024, 640
		}, map[string]string{"CFG scale": "4.25", "Seed": "4294967295", "Size": "1024x640"}},
		{"clip skip and cpu rng", func(p *Params) { p.Prompt, p.ClipSkip, p.RNG = "x", 2, "cpu" },
			map[string]string{"Clip skip": "2", "RNG": "CPU"}},
		{"unicode", func(p *Params) { p.Prompt, p.Negative, p.Model = "un renard ü 狐", "flou", "modèle, 狐" },
			map[string]string{"Prompt": "un renard ü 狐", "Negative prompt": "flou", "Model": "modèle, 狐"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := base
			c.mod(&p)
			text := p.Infotext()
			got := ParseInfotext(text)
			want := map[string]string{"Steps": "20", "Seed": "42", "Size": "512x512"}
			for k, v := range c.want {
				want[k] = v
			}
			for k, v := range want {
				if g, ok := got[k]; !ok || g != v {
					t.Errorf("%q: got %q (present %v), want %q\ninfotext:\n%s", k, g, ok, v, text)
				}
			}
			if _, ok := got["Negative prompt"]; ok != (p.Negative != "") {
				t.Errorf("Negative prompt present = %v, want %v", ok, p.Negative != "")
			}
			if strings.Count(text, "\nSteps: ") != 1 && !strings.HasPrefix(text, "Steps: ") && p.Prompt != "" {
				t.Errorf("infotext has no single key-value line:\n%s", text)
			}
		})
	}
}

// TestParseInfotextA1111: text written by AUTOMATIC1111 itself (its quoting
// of values with commas uses JSON strings) parses.
func TestParseInfotextA1111(t *testing.T) {
	text := "masterpiece, a fox\nNegative prompt: (worst quality:1.4), blurry\n" +
		`Steps: 30, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 1234567890, Size: 512x768, ` +
		`Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Lora hashes: "fox: 1a2b3c, snow: 4d5e6f", ` +
		`Version: v1.10.1`
	got := ParseInfotext(text)
	for k, v := range map[string]string{
		"Prompt": "masterpiece, a fox", "Negative prompt": "(worst quality:1.4), blurry", "Steps": "30",
		"Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "6.5", "Seed": "1234567890",
		"Size": "512x768", "Model hash": "6ce0161689", "Model": "v1-5-pruned-emaonly",
		"Lora hashes": "fox: 1a2b3c, snow: 4d5e6f", "Version": "v1.10.1",
	} {
		if got[k] != v {
			t.Errorf("%q = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != 12 {
		t.Errorf("%d keys, want 12: %v", len(got), got)
	}
	// Broken input never panics and keeps what it can.
	for _, s := range []string{"", "\n", "a fox", "Steps: ", `Model: "unterminated, Seed: 1`, "x\nNegative prompt: \n: : :"} {
		_ = ParseInfotext(s)
	}
	if got := ParseInfotext("a fox\nSteps: 5"); got["Prompt"] != "a fox" || got["Steps"] != "5" {
		t.Errorf("minimal infotext: %v", got)
	}
}
