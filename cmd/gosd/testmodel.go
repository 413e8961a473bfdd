package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

func runTestModel(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("testmodel", stderr)
	family := fs.String("family", "sd15", "model family: sd15, sd21 or sdxl")
	size := fs.String("size", "tiny", "tiny (for tests) or full (the released tensor names and shapes)")
	dtype := fs.String("dtype", "f16", "weight dtype: f32, f16 or bf16")
	layout := fs.String("layout", "single", "single (.safetensors), ckpt (PyTorch zip) or diffusers (folder)")
	seed := fs.Uint64("seed", testmodel.DefaultSeed, "random seed")
	output := fs.String("output", "", "output file or folder")
	configDir := fs.String("config-dir", "", "folder with the real diffusers configs and tokenizer of the family (diffusers layout; default: ../shared/models/<family> beside the gosd checkout holding the working directory)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (the file to write goes in --output)", pos[0])
	}
	if *output == "" {
		return usagef("--output is required")
	}
	var dt tensor.DType
	switch strings.ToLower(*dtype) {
	case "f32", "fp32", "float32":
		dt = tensor.F32
	case "f16", "fp16", "float16":
		dt = tensor.F16
	case "bf16", "bfloat16":
		dt = tensor.BF16
	default:
		return usagef("--dtype %q: want f32, f16 or bf16", *dtype)
	}
	opts := testmodel.Options{Family: *family, Size: *size, DType: dt, Layout: *layout, Seed: *seed, Output: *output}
	if *configDir != "" {
		opts.ConfigDir = *configDir
		if _, err := os.Stat(filepath.Join(*configDir, "tokenizer", "merges.txt")); err == nil {
			opts.TokenizerDir = filepath.Join(*configDir, "tokenizer")
		}
	}
	if err := testmodel.Write(opts); err != nil {
		return err
	}
	fmt.Fprintln(stdout, *output)
	return nil
}
