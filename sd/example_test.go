package sd_test

import (
	"context"
	"fmt"
	"log"

	"github.com/gosd/gosd/sd"
	"github.com/gosd/gosd/sd/imageio"
)

// Load a single-file SD 1.5 checkpoint with the CLIP tokenizer folder beside
// it, generate one image with a progress callback, and save it as a PNG that
// carries its settings in AUTOMATIC1111's "parameters" text.
func Example() {
	ctx := context.Background()
	p, err := sd.Load(ctx, "v1-5-pruned-emaonly.safetensors", sd.Options{Tokenizer: "tokenizer"})
	if err != nil {
		log.Fatal(err)
	}
	defer p.Close()
	res, err := p.Generate(ctx, sd.Request{
		Prompt:   "a watercolor painting of a fox",
		Negative: "blurry",
		Width:    512, Height: 512,
		Steps: 20, CFG: 7, Sampler: "euler_a", Schedule: "karras",
		Seed:     42,
		Progress: func(pr sd.Progress) { fmt.Printf("step %d/%d\n", pr.Step, pr.Steps) },
	})
	if err != nil {
		log.Fatal(err)
	}
	text := imageio.TextChunk{Key: "parameters", Value: res.Params.Infotext()}
	if err := imageio.WritePNG("fox.png", res.Image, text); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%.2f s/step\n", res.Timings.PerStep.Seconds())
}

// Validate checks a request without loading a model, as the CLI does before
// the (slow) load.
func ExampleValidate() {
	err := sd.Validate(sd.Request{Prompt: "a fox", Width: 500, Height: 512})
	fmt.Println(err)
	// Output: invalid request: size 500x512: width and height must be positive multiples of 8
}

// ParseInfotext reads the settings back from an image's "parameters" text.
func ExampleParseInfotext() {
	p := sd.Params{Prompt: "a fox, at dawn", Steps: 20, Sampler: "euler_a", CFG: 7, Seed: 42, Width: 512, Height: 512}
	kv := sd.ParseInfotext(p.Infotext())
	fmt.Println(kv["Prompt"], "|", kv["Sampler"], "|", kv["Seed"], "|", kv["Size"])
	// Output: a fox, at dawn | Euler a | 42 | 512x512
}
