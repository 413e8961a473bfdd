package vae

import (
	"context"
	"fmt"
	"image"
	"time"

	"github.com/gosd/gosd/sd/imageio"
	"github.com/gosd/gosd/sd/tensor"
)

// RoundTrip encodes img with enc and decodes the latent with dec, returning
// the reconstruction and its PSNR in dB against the input over 8-bit RGB.
// img is first cropped from the top left to multiples of 8 per side
// (imageio.CropMultiple), gray is replicated to RGB and alpha is dropped; the
// output has the cropped size. The latent is passed on in f32, unquantised.
func RoundTrip(ctx context.Context, be tensor.Backend, enc, dec *Tiny, img image.Image) (out image.Image, psnrDB float64, err error) {
	r, err := roundTrip(ctx, be, enc, dec, img)
	if err != nil {
		return nil, 0, err
	}
	return r.image, r.PSNR, nil
}

// TinyRoundTripResult reports a RoundTripFiles run; field names are the JSON
// the CLI prints.
type TinyRoundTripResult struct {
	Input         string  `json:"input"`
	Output        string  `json:"output,omitempty"`
	Width         int     `json:"width"`  // after cropping to a multiple of 8
	Height        int     `json:"height"` // after cropping to a multiple of 8
	Cropped       bool    `json:"cropped"`
	LatentShape   []int   `json:"latent_shape"` // [1, C, H/8, W/8]
	PSNR          float64 `json:"psnr_db"`
	EncodeSeconds float64 `json:"encode_seconds"`
	DecodeSeconds float64 `json:"decode_seconds"`
	Backend       string  `json:"backend"`

	image image.Image
}

func roundTrip(ctx context.Context, be tensor.Backend, enc, dec *Tiny, img image.Image) (*TinyRoundTripResult, error) {
	if enc == nil || enc.Role != TinyEncoder {
		return nil, fmt.Errorf("vae: round trip needs a tiny encoder")
	}
	if dec == nil || dec.Role != TinyDecoder {
		return nil, fmt.Errorf("vae: round trip needs a tiny decoder")
	}
	if enc.LatentChannels != dec.LatentChannels {
		return nil, fmt.Errorf("vae: tiny encoder makes %d latent channels but the decoder takes %d",
			enc.LatentChannels, dec.LatentChannels)
	}
	src, err := imageio.CropMultiple(img, 8)
	if err != nil {
		return nil, err
	}
	b := src.Bounds()
	r := &TinyRoundTripResult{Width: b.Dx(), Height: b.Dy(), Cropped: b != img.Bounds(), Backend: be.Name()}
	t0 := time.Now()
	z, err := enc.Encode(ctx, be, imageio.ToTensor(src))
	if err != nil {
		return nil, err
	}
	t1 := time.Now()
	y, err := dec.Decode(ctx, be, z)
	if err != nil {
		return nil, err
	}
	r.EncodeSeconds, r.DecodeSeconds = t1.Sub(t0).Seconds(), time.Since(t1).Seconds()
	r.LatentShape = append([]int(nil), z.Shape...)
	out, err := imageio.FromTensor(y)
	if err != nil {
		return nil, err
	}
	if r.PSNR, err = imageio.PSNR(src, out); err != nil {
		return nil, err
	}
	r.image = out
	return r, nil
}

// RoundTripFiles loads the encoder and decoder weight files and the input
// image, runs RoundTrip, and writes the reconstruction as a PNG to output
// (atomically) unless output is "". It is the whole of `gosd vae roundtrip`.
func RoundTripFiles(ctx context.Context, be tensor.Backend, encoderPath, decoderPath, input, output string) (*TinyRoundTripResult, error) {
	enc, err := LoadTinyFile(encoderPath)
	if err != nil {
		return nil, err
	}
	dec, err := LoadTinyFile(decoderPath)
	if err != nil {
		return nil, err
	}
	img, err := imageio.Load(input)
	if err != nil {
		return nil, err
	}
	r, err := roundTrip(ctx, be, enc, dec, img)
	if err != nil {
		return nil, err
	}
	r.Input = input
	if output != "" {
		if err := imageio.WritePNG(output, r.image); err != nil {
			return nil, err
		}
		r.Output = output
	}
	return r, nil
}
