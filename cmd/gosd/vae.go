package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/gosd/gosd/sd"
	"github.com/gosd/gosd/sd/vae"
)

func runVAE(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "roundtrip" {
		return usagef("usage: gosd vae roundtrip --encoder E --decoder D --input IMG --output OUT [--json]")
	}
	fs := newFlags("vae roundtrip", stderr)
	enc := fs.String("encoder", "", "tiny autoencoder encoder weights (.pth or .safetensors)")
	dec := fs.String("decoder", "", "tiny autoencoder decoder weights (.pth or .safetensors)")
	input := fs.String("input", "", "input image (PNG or JPEG); cropped from the top left to a multiple of 8")
	output := fs.String("output", "", "output PNG (optional)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	threads := fs.Int("threads", 0, "CPU threads (0: all cores)")
	backend := fs.String("backend", "cpu", "compute backend")
	pos, err := parseFlags(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("unexpected argument %q (files go in --encoder, --decoder, --input and --output)", pos[0])
	}
	if *enc == "" || *dec == "" || *input == "" {
		return usagef("--encoder, --decoder and --input are required")
	}
	be, err := sd.NewBackend(*backend, *threads)
	if err != nil {
		return err
	}
	r, err := vae.RoundTripFiles(ctx, be, *enc, *dec, *input, *output)
	if err != nil {
		return err
	}
	if *asJSON {
		e := json.NewEncoder(stdout)
		return e.Encode(r)
	}
	fmt.Fprintf(stdout, "PSNR %.2f dB (%dx%d, latent %v, encode %.2fs, decode %.2fs, %s)\n",
		r.PSNR, r.Width, r.Height, r.LatentShape, r.EncodeSeconds, r.DecodeSeconds, r.Backend)
	return nil
}
