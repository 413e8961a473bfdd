package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/gosd/gosd/sd"
	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/lora"
)

// familyNames are human names for ckpt's family codes.
var familyNames = map[string]string{
	"sd1":     "Stable Diffusion 1.x",
	"sd2":     "Stable Diffusion 2.x",
	"sdxl":    "Stable Diffusion XL",
	"unknown": "unknown",
}

func runInspect(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("inspect", stderr)
	asJSON := fs.Bool("json", false, "print one JSON object")
	var loras multiFlag
	fs.Var(&loras, "lora", "also report which keys of this LoRA file match the model (repeatable)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: gosd inspect [--json] [--lora FILE] PATH")
	}
	c, err := ckpt.Open(pos[0], ckpt.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	info := ckpt.Describe(c)
	var reports []loraMatch
	for _, path := range loras {
		r, err := matchLora(c, path)
		if err != nil {
			return err
		}
		reports = append(reports, r)
	}
	if *asJSON {
		return json.NewEncoder(stdout).Encode(struct {
			ckpt.Info
			Loras []loraMatch `json:"loras,omitempty"`
		}{info, reports})
	}
	fmt.Fprintf(stdout, "path     %s\n", info.Path)
	fmt.Fprintf(stdout, "family   %s (%s)\n", familyNames[info.Family], info.Family)
	fmt.Fprintf(stdout, "layout   %s\n", info.Layout)
	if pred, src, err := sd.PredictionHint(c); err == nil {
		if src == "a1111-test" {
			fmt.Fprintln(stdout, "predict  decided at load by AUTOMATIC1111's test (768-v releases give v; --prediction overrides)")
		} else {
			fmt.Fprintf(stdout, "predict  %s (%s)\n", pred, src)
		}
	}
	fmt.Fprintf(stdout, "dtype    %s (tensors by dtype: %s)\n", info.DType, countList(info.DTypes))
	fmt.Fprintf(stdout, "tensors  %d (%s)\n", info.Tensors, countList(info.Parts))
	fmt.Fprintf(stdout, "params   %.3f G in %.2f GB\n", float64(info.Params)/1e9, float64(info.Bytes)/1e9)
	fmt.Fprintf(stdout, "ema      %v (%d model_ema.* tensors)\n", info.HasEMA, info.Parts["ema"])
	for _, r := range reports {
		fmt.Fprintf(stdout, "lora     %s: %d of %d modules match (%d text encoder, %d UNet)\n",
			r.File, len(r.Matched), len(r.Matched)+len(r.Unmatched), r.TE, len(r.Matched)-r.TE)
		for _, u := range r.Unmatched {
			fmt.Fprintf(stdout, "  unmatched %s\n", u)
		}
	}
	return nil
}

// loraMatch says which modules of a LoRA file map onto a model's weights.
type loraMatch struct {
	File      string            `json:"file"`
	Matched   map[string]string `json:"matched"` // module key -> ldm weight
	Unmatched []string          `json:"unmatched"`
	TE        int               `json:"text_encoder_modules"`
}

func matchLora(c *ckpt.Checkpoint, path string) (loraMatch, error) {
	f, err := lora.Load(path)
	if err != nil {
		return loraMatch{}, err
	}
	t, err := lora.NewTargets(c)
	if err != nil {
		return loraMatch{}, err
	}
	r := loraMatch{File: path, Matched: map[string]string{}}
	for _, m := range f.Modules {
		if ldm, te, ok := t.Resolve(m.Key); ok {
			r.Matched[m.Key] = ldm
			if te {
				r.TE++
			}
		} else {
			r.Unmatched = append(r.Unmatched, m.Key)
		}
	}
	r.Unmatched = append(r.Unmatched, f.Unsupported...)
	return r, nil
}

// multiFlag collects a repeatable string flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func countList(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}
