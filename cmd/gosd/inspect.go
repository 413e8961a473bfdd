package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/gosd/gosd/sd/ckpt"
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
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("usage: gosd inspect [--json] PATH")
	}
	c, err := ckpt.Open(pos[0], ckpt.Options{})
	if err != nil {
		return err
	}
	defer c.Close()
	info := ckpt.Describe(c)
	if *asJSON {
		return json.NewEncoder(stdout).Encode(info)
	}
	fmt.Fprintf(stdout, "path     %s\n", info.Path)
	fmt.Fprintf(stdout, "family   %s (%s)\n", familyNames[info.Family], info.Family)
	fmt.Fprintf(stdout, "layout   %s\n", info.Layout)
	fmt.Fprintf(stdout, "dtype    %s (tensors by dtype: %s)\n", info.DType, countList(info.DTypes))
	fmt.Fprintf(stdout, "tensors  %d (%s)\n", info.Tensors, countList(info.Parts))
	fmt.Fprintf(stdout, "params   %.3f G in %.2f GB\n", float64(info.Params)/1e9, float64(info.Bytes)/1e9)
	fmt.Fprintf(stdout, "ema      %v\n", info.HasEMA)
	return nil
}

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
