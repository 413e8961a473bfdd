package sd

import (
	"fmt"
	"strconv"
	"strings"
)

// Params are the settings that produced an image, as written into its PNG.
type Params struct {
	Prompt    string
	Negative  string
	Steps     int
	Sampler   string // gosd name, e.g. "euler_a"
	Schedule  string // "normal" or "karras"
	CFG       float64
	Seed      int64
	Width     int
	Height    int
	ClipSkip  int
	RNG       string // "cuda" or "cpu"
	Model     string // file or folder name of the checkpoint
	ModelHash string // first 10 hex digits of the file's sha256, when known
	Backend   string
}

// samplerLabels maps gosd sampler names to the labels AUTOMATIC1111 writes.
var samplerLabels = map[string]string{
	"euler":        "Euler",
	"euler_a":      "Euler a",
	"heun":         "Heun",
	"dpm2":         "DPM2",
	"dpm2_a":       "DPM2 a",
	"dpmpp_2s_a":   "DPM++ 2S a",
	"dpmpp_2m":     "DPM++ 2M",
	"dpmpp_2m_sde": "DPM++ 2M SDE",
	"dpmpp_3m_sde": "DPM++ 3M SDE",
	"lcm":          "LCM",
	"ddim":         "DDIM",
	"unipc":        "UniPC",
}

// scheduleLabels maps gosd schedule names to AUTOMATIC1111's "Schedule type".
var scheduleLabels = map[string]string{
	"normal":       "Automatic",
	"discrete":     "Automatic",
	"karras":       "Karras",
	"exponential":  "Exponential",
	"sgm_uniform":  "SGM Uniform",
	"simple":       "Simple",
	"ddim_uniform": "DDIM",
}

// Infotext formats p the way AUTOMATIC1111 writes the PNG "parameters" text
// chunk: the prompt, an optional "Negative prompt:" line, then one line of
// comma-separated "Key: value" pairs. Tools that read A1111 images (its PNG
// Info tab, ComfyUI loaders, image boards) parse this format.
func (p Params) Infotext() string {
	var b strings.Builder
	b.WriteString(p.Prompt)
	b.WriteByte('\n')
	if p.Negative != "" {
		b.WriteString("Negative prompt: " + p.Negative + "\n")
	}
	label := samplerLabels[p.Sampler]
	if label == "" {
		label = p.Sampler
	}
	kv := []string{
		"Steps: " + strconv.Itoa(p.Steps),
		"Sampler: " + label,
	}
	if s := scheduleLabels[p.Schedule]; s != "" && s != "Automatic" {
		kv = append(kv, "Schedule type: "+s)
	}
	kv = append(kv,
		"CFG scale: "+strconv.FormatFloat(p.CFG, 'g', -1, 64),
		"Seed: "+strconv.FormatInt(p.Seed, 10),
		fmt.Sprintf("Size: %dx%d", p.Width, p.Height),
	)
	if p.ModelHash != "" {
		kv = append(kv, "Model hash: "+p.ModelHash)
	}
	if p.Model != "" {
		kv = append(kv, "Model: "+quoteInfo(p.Model))
	}
	if p.ClipSkip > 1 {
		kv = append(kv, "Clip skip: "+strconv.Itoa(p.ClipSkip))
	}
	if p.RNG == "cpu" {
		kv = append(kv, "RNG: CPU")
	}
	kv = append(kv, "Version: gosd "+Version)
	b.WriteString(strings.Join(kv, ", "))
	return b.String()
}

// quoteInfo quotes a value containing commas or colons as A1111 does.
func quoteInfo(s string) string {
	if strings.ContainsAny(s, ",:\"\n") {
		return strconv.Quote(s)
	}
	return s
}

// ParseInfotext reads the key-value line of an AUTOMATIC1111 infotext back
// into a map, with the prompt under "Prompt" and the negative prompt under
// "Negative prompt". Quoted values are unquoted.
func ParseInfotext(s string) map[string]string {
	out := map[string]string{}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) == 0 {
		return out
	}
	last := lines[len(lines)-1]
	body := lines[:len(lines)-1]
	var prompt, neg []string
	inNeg := false
	for _, l := range body {
		if strings.HasPrefix(l, "Negative prompt: ") {
			inNeg = true
			l = strings.TrimPrefix(l, "Negative prompt: ")
		}
		if inNeg {
			neg = append(neg, l)
		} else {
			prompt = append(prompt, l)
		}
	}
	out["Prompt"] = strings.Join(prompt, "\n")
	if inNeg {
		out["Negative prompt"] = strings.Join(neg, "\n")
	}
	for len(last) > 0 {
		i := strings.Index(last, ": ")
		if i < 0 {
			break
		}
		key := strings.TrimSpace(last[:i])
		rest := last[i+2:]
		var val string
		if strings.HasPrefix(rest, "\"") {
			if u, err := strconv.QuotedPrefix(rest); err == nil {
				val, _ = strconv.Unquote(u)
				rest = rest[len(u):]
			}
		} else if j := strings.Index(rest, ", "); j >= 0 {
			val, rest = rest[:j], rest[j:]
		} else {
			val, rest = rest, ""
		}
		out[key] = val
		last = strings.TrimPrefix(rest, ", ")
	}
	return out
}
