// Package sd is gosd's SDK: load a Stable Diffusion checkpoint and generate
// images from text.
//
//	p, err := sd.Load(ctx, "model.safetensors", sd.Options{Tokenizer: "tokenizer"})
//	res, err := p.Generate(ctx, sd.Request{Prompt: "a fox", Seed: 42})
//
// A Pipeline is safe for one Generate at a time.
package sd

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/clip"
	"github.com/gosd/gosd/sd/imageio"
	"github.com/gosd/gosd/sd/lora"
	"github.com/gosd/gosd/sd/nn"
	"github.com/gosd/gosd/sd/prompt"
	"github.com/gosd/gosd/sd/rng"
	"github.com/gosd/gosd/sd/sample"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/unet"
	"github.com/gosd/gosd/sd/vae"
)

// Options configure Load.
type Options struct {
	// Backend names the compute backend: "cpu" (default, native kernels),
	// "cuda" (an NVIDIA GPU; only in builds with the cuda tag, see Device)
	// or "ref" (the pure-Go reference; very slow, for tests).
	Backend string
	// Threads caps the CPU backend's threads; 0 uses every core.
	Threads int
	// Device is the GPU index for GPU backends.
	Device int
	// UseEMA picks the EMA copy of the UNet weights when the file has one.
	UseEMA bool
	// Tokenizer is a folder holding the CLIP tokenizer's vocab.json and
	// merges.txt. When empty: $GOSD_TOKENIZER, then the diffusers folder's
	// own tokenizer, then a "tokenizer" folder beside the checkpoint file.
	Tokenizer string
	// Logger receives load warnings (e.g. unused tensors); nil discards them.
	Logger *slog.Logger
	// EmbeddingsDir holds textual-inversion embeddings (.pt, .bin,
	// .safetensors) that prompts use by file name; "" for none.
	EmbeddingsDir string
	// LoraDir holds the LoRA files "<lora:name:weight>" tags refer to.
	LoraDir string
	// Prediction overrides the UNet's prediction type: "eps" or "v"; ""
	// detects it (see Pipeline.Prediction).
	Prediction string
	// Precision of the CPU backend's matrix products: "f32" (default,
	// reference accuracy) or "bf16" (AVX512-BF16, about twice as fast). It
	// is process-wide.
	Precision string
	// VAE replaces the checkpoint's VAE with this file (original or
	// diffusers names, e.g. vae-ft-mse-840000 or sdxl-vae-fp16-fix).
	VAE string
	// VAEF32 decodes in f32 even when Precision is bf16; on a GPU backend
	// it converts the VAE's 16-bit weights to f32 (the GPU kernels round
	// activations to the weights' type). Without it a decode that gives NaN
	// or Inf is retried that way.
	VAEF32 bool
	// Profile records every kernel call of the models (see
	// Pipeline.Profile): calls, wall time and GFLOP/s per kind of op.
	Profile bool
	// KeepPackedWeights keeps each network's weights in memory, packed for
	// the CPU kernels in bf16 runs, between the phases of a generation
	// (text encoder, UNet, VAE) and from one generation to the next. By
	// default a network's packed copies and the resident pages of its
	// memory-mapped weights are released when its phase ends, so that the
	// peak memory is that of the largest network instead of their sum
	// (SD 1.5 at 512x512 in bf16: 2.3 GB instead of 3.7 GB), at the cost of
	// reading and packing them again at the next generation (the first
	// step of SD 1.5 at 512x512 takes about 2 s longer). Servers that
	// generate many images and have the memory should set it.
	KeepPackedWeights bool
}

// Pipeline is a loaded SD 1.x, 2.x or XL text-to-image model.
type Pipeline struct {
	family string  // "sd1", "sd2", "sdxl"
	pred   string  // PredictionEps or PredictionV
	xl     *xlCond // SDXL's second text encoder; nil otherwise
	ck     *ckpt.Checkpoint
	be     tensor.Backend
	ops    tensor.Backend // be, or a Profile wrapping it
	prof   *tensor.Profile
	keep   bool // Options.KeepPackedWeights
	tok    *clip.Tokenizer
	text   *clip.TextModel
	unet   *unet.UNet
	vae    *vae.KL
	sched  *sample.Schedule
	enc    *prompt.Encoder
	loras  *lora.Library
	// Base networks (no LoRA) and the LoRA set the current ones carry.
	baseText  *clip.TextModel
	baseText2 *clip.OpenCLIP // SDXL's second text encoder without LoRA
	baseUNet  *unet.UNet
	textCfg   *clip.Config
	unetCfg   *unet.Config
	// OpenCLIP config and layer count buildText uses (SD 2.x; nil and 0
	// for SDXL: inferred, every layer).
	openCfg    *clip.Config
	openLayers int
	loraKey    string
	model      string
	log        *slog.Logger
	mu         sync.Mutex
	closed     bool
	release    func()
	vaeFile    *vaeFile // Options.VAE, when given
	vaeF32     bool
	predSrc    string // how pred was chosen (PredictionSource)
}

// Prefixes of the original single-file layout.
const (
	prefixUNet = "model.diffusion_model."
	prefixVAE  = "first_stage_model."
	prefixCLIP = "cond_stage_model.transformer.text_model."
)

// Load opens the checkpoint at path (a .safetensors or .ckpt file, or a
// diffusers folder), builds the text encoder, UNet and VAE on the chosen
// backend, and checks every weight's shape. It fails with an error naming the
// problem for unreadable files, unsupported model families and missing or
// misshapen tensors.
func Load(ctx context.Context, path string, opts Options) (p *Pipeline, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	be, err := NewDeviceBackend(opts.Backend, opts.Threads, opts.Device)
	if err != nil {
		return nil, err
	}
	if opts.Precision != "" {
		c, ok := be.(*tensor.CPU)
		if !ok && opts.Precision != "f32" {
			return nil, fmt.Errorf("precision %q: only the cpu backend has a bf16 mode", opts.Precision)
		}
		if ok {
			if err := c.SetPrecision(opts.Precision); err != nil {
				return nil, err
			}
		}
	}
	ck, err := ckpt.Open(path, ckpt.Options{UseEMA: opts.UseEMA})
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			ck.Close()
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch ck.Family {
	case "sd1", "sd2", "sdxl":
	default:
		return nil, fmt.Errorf("%s: not a Stable Diffusion 1.x, 2.x or XL checkpoint (no UNet with a known text context found)", path)
	}

	tokDir, err := findTokenizer(opts.Tokenizer, path, ck)
	if err != nil {
		return nil, err
	}
	tok, err := clip.LoadTokenizer(tokDir)
	if err != nil {
		return nil, err
	}

	p = &Pipeline{ck: ck, be: be, ops: be, tok: tok, model: filepath.Base(strings.TrimRight(path, "/")), log: log,
		keep: opts.KeepPackedWeights}
	if opts.Profile {
		p.prof = tensor.NewProfile(be)
		p.ops = p.prof
	}
	rec := &recorder{Checkpoint: ck, used: map[string]bool{}}
	if err = p.loadFamily(rec, opts); err != nil {
		return nil, err
	}
	if err = p.newFamilyEncoders(opts); err != nil {
		return nil, err
	}
	if opts.VAE != "" {
		if err = p.loadVAEOverride(opts.VAE); err != nil {
			return nil, err
		}
	}
	p.vaeF32 = opts.VAEF32
	p.loras = &lora.Library{Dir: opts.LoraDir}
	p.baseText, p.baseUNet = p.text, p.unet
	if p.xl != nil {
		p.baseText2 = p.xl.text2
	}
	tc := p.text.Config
	p.textCfg, p.unetCfg = &tc, p.unet.Config
	p.warnUnused(rec.used)
	return p, nil
}

// recorder is a Source that notes every name the models read.
type recorder struct {
	*ckpt.Checkpoint
	used map[string]bool
}

func (r *recorder) Get(name string) (*tensor.Tensor, bool) {
	t, ok := r.Checkpoint.Get(name)
	if ok {
		r.used[name] = true
	}
	return t, ok
}

func loadText(ck *recorder) (*clip.TextModel, error) {
	var cfg *clip.Config
	if raw := componentConfig(ck.Checkpoint, "text_encoder"); raw != nil {
		c, err := clip.ParseConfig(raw)
		if err != nil {
			return nil, fmt.Errorf("text_encoder/config.json: %w", err)
		}
		cfg = &c
	}
	return clip.Load(ck, prefixCLIP, cfg)
}

func loadUNet(ck *recorder) (*unet.UNet, error) {
	var cfg *unet.Config
	var err error
	if raw := componentConfig(ck.Checkpoint, "unet"); raw != nil {
		if cfg, err = unet.ParseConfig(raw); err != nil {
			return nil, fmt.Errorf("unet/config.json: %w", err)
		}
	} else if cfg, err = unet.InferConfig(ck); err != nil {
		return nil, err
	}
	return unet.Load(ck, cfg)
}

func loadVAE(ck *recorder) (*vae.KL, error) {
	var cfg *vae.KLConfig
	var err error
	if raw := componentConfig(ck.Checkpoint, "vae"); raw != nil {
		if cfg, err = vae.ParseKLConfig(raw); err != nil {
			return nil, fmt.Errorf("vae/config.json: %w", err)
		}
	} else if cfg, err = vae.InferKLConfig(ck); err != nil {
		return nil, err
	}
	return vae.LoadKL(ck, cfg)
}

// loadSchedule prefers the checkpoint's own alphas_cumprod buffer, then the
// diffusers scheduler config, then SD's scaled-linear default.
func loadSchedule(ck *recorder) (*sample.Schedule, error) {
	if t, ok := ck.Get("alphas_cumprod"); ok {
		return sample.NewScheduleFromAlphasCumprod(f64s(t.Float32s()))
	}
	if raw := componentConfig(ck.Checkpoint, "scheduler"); raw != nil {
		return sample.NewScheduleFromConfig(raw)
	}
	return sample.NewScheduleFromConfig(nil)
}

func f64s(f []float32) []float64 {
	out := make([]float64, len(f))
	for i, v := range f {
		out[i] = float64(v)
	}
	return out
}

// knownExtra are tensors a SD 1.x file carries that no network reads.
var knownExtra = []string{"betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod",
	"sqrt_one_minus_alphas_cumprod", "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
	"sqrt_recipm1_alphas_cumprod", "posterior_variance", "posterior_log_variance_clipped",
	"posterior_mean_coef1", "posterior_mean_coef2", "logvar", "model_ema.decay", "model_ema.num_updates",
	prefixCLIP + "embeddings.position_ids"}

// warnUnused logs, once, how many tensors of the file no network used.
func (p *Pipeline) warnUnused(used map[string]bool) {
	for _, n := range knownExtra {
		used[n] = true
	}
	var unused []string
	for _, n := range p.ck.Names() {
		if used[n] || strings.HasPrefix(n, "model_ema.") {
			continue
		}
		unused = append(unused, n)
	}
	if len(unused) > 0 {
		ex := unused[:min(3, len(unused))]
		p.log.Warn("checkpoint has tensors the model does not use; skipped", "count", len(unused), "examples", ex)
	}
}

// componentConfig returns a diffusers component's raw config.json, or nil
// for single-file checkpoints.
func componentConfig(ck *ckpt.Checkpoint, name string) []byte {
	if ck.Diffusers == nil {
		return nil
	}
	return ck.Diffusers.Configs[name]
}

// tokenizerDir is the diffusers folder's tokenizer, or "".
func tokenizerDir(ck *ckpt.Checkpoint) string {
	if ck.Diffusers == nil {
		return ""
	}
	return ck.Diffusers.TokenizerDir
}

// findTokenizer picks the tokenizer folder (see Options.Tokenizer).
func findTokenizer(explicit, modelPath string, ck *ckpt.Checkpoint) (string, error) {
	if explicit != "" {
		return explicit, nil // an explicit choice is final; LoadTokenizer reports what is missing
	}
	var tried []string
	for _, c := range []struct{ dir, what string }{
		{os.Getenv("GOSD_TOKENIZER"), "$GOSD_TOKENIZER"},
		{tokenizerDir(ck), "the diffusers folder's tokenizer"},
		{filepath.Join(filepath.Dir(modelPath), "tokenizer"), "the tokenizer folder beside the model"},
	} {
		switch {
		case c.dir == "" && c.what == "$GOSD_TOKENIZER":
			tried = append(tried, "$GOSD_TOKENIZER (unset)")
			continue
		case c.dir == "":
			continue
		}
		if _, err := os.Stat(filepath.Join(c.dir, "merges.txt")); err == nil {
			return c.dir, nil
		}
		tried = append(tried, c.what+" "+c.dir)
	}
	return "", fmt.Errorf("no CLIP tokenizer found (tried %s): single-file checkpoints do not contain it; "+
		"give a folder with the model's vocab.json and merges.txt (gosd: --tokenizer DIR; SDK: Options.Tokenizer)",
		strings.Join(tried, ", "))
}

// Profile returns the kernel profile of the models' calls when
// Options.Profile was set, else nil.
func (p *Pipeline) Profile() *tensor.Profile { return p.prof }

// Backend returns the compute backend the pipeline runs on.
func (p *Pipeline) Backend() tensor.Backend { return p.be }

// BackendName names the compute backend in use.
func (p *Pipeline) BackendName() string { return p.be.Name() }

// Close releases the checkpoint's memory mappings. The Pipeline is unusable afterwards.
func (p *Pipeline) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if p.vaeFile != nil {
		p.vaeFile.Close()
	}
	if _, ok := p.be.(*tensor.CPU); ok {
		// The CPU backend caches packed weights by address; a checkpoint
		// mapped later at the same address must not meet stale panels.
		tensor.ClearCPUWeightCache()
	}
	return p.ck.Close()
}

// NativeSize is the image size the model was trained at, which Generate
// uses when a request gives no size: 1024x1024 for SDXL, 768x768 for SD 2.x
// v-prediction models, 512x512 otherwise.
func (p *Pipeline) NativeSize() (width, height int) {
	switch {
	case p.family == "sdxl":
		return 1024, 1024
	case p.family == "sd2" && p.pred == PredictionV:
		return 768, 768
	}
	return 512, 512
}

// Generate runs text-to-image for r and returns the image with the
// parameters used. It honours ctx cancellation between UNet evaluations.
func (p *Pipeline) Generate(ctx context.Context, r Request) (*Result, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("sd: pipeline is closed")
	}
	if r.Width == 0 && r.Height == 0 {
		r.Width, r.Height = p.NativeSize()
	}
	if err := r.normalize(); err != nil {
		return nil, err
	}
	if f := p.vae.Config.Factor(); r.InitNoise != nil && len(r.InitNoise) != 4*(r.Width/f)*(r.Height/f) {
		return nil, badRequest("init noise has %d values, size %dx%d needs %d",
			len(r.InitNoise), r.Width, r.Height, 4*(r.Width/f)*(r.Height/f))
	}
	if err := checkMemory(r.Width, r.Height); err != nil {
		return nil, err
	}
	res := &Result{Params: Params{Prompt: r.Prompt, Negative: r.Negative, Steps: r.Steps, Sampler: r.Sampler,
		Schedule: r.Schedule, CFG: r.CFG, Seed: r.Seed, Width: r.Width, Height: r.Height, ClipSkip: r.ClipSkip,
		RNG: r.RNG, Model: p.model, Backend: p.be.Name()}}

	t0 := time.Now()
	if err := p.useLoras(r.Prompt); err != nil {
		return nil, err
	}
	var cond, y *tensor.Tensor
	var err error
	if p.family == "sd1" {
		cond, err = p.embed(r)
	} else {
		cond, y, err = p.embedFamily(r, r.Width, r.Height)
	}
	if err != nil {
		return nil, err
	}
	res.Timings.TextEncode = time.Since(t0)
	p.releasePacked(p.text)
	if p.xl != nil {
		p.releasePacked(p.xl.text2)
	}

	t1 := time.Now()
	// On a GPU backend the UNet's weights go to the device in one batch
	// before the first step, and the VAE's on a copy stream while the UNet
	// samples.
	p.prefetch(p.unet)
	vaeReady := p.prefetchAsync(p.vae)
	latent, err := p.sample(ctx, r, cond, y)
	if err != nil {
		<-vaeReady // no goroutine outlives Generate
		return nil, err
	}
	res.Timings.Sampling = time.Since(t1)
	res.Timings.PerStep = res.Timings.Sampling / time.Duration(r.Steps)
	p.releasePacked(p.unet)
	<-vaeReady

	t2 := time.Now()
	f := p.vae.Config.Factor()
	img, err := p.decode(ctx, latent, r.Height/f, r.Width/f)
	if err != nil {
		return nil, err
	}
	res.Timings.VAEDecode = time.Since(t2)
	p.releasePacked(p.vae)
	res.Image = img
	return res, nil
}

// prefetch copies net's weights to a GPU backend's memory in one batch (see
// tensor.PrefetchWeights); a failure only leaves them to their first use.
func (p *Pipeline) prefetch(net any) {
	if net == nil {
		return
	}
	if err := tensor.PrefetchWeights(p.be, nn.Weights(net)); err != nil {
		p.log.Warn("weight prefetch failed; weights upload on first use", "err", err)
	}
}

// prefetchAsync is prefetch in a goroutine; the channel closes when it is
// done. Nothing starts on a backend without device memory.
func (p *Pipeline) prefetchAsync(net any) <-chan struct{} {
	done := make(chan struct{})
	if _, ok := p.be.(tensor.WeightPrefetcher); !ok {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		p.prefetch(net)
	}()
	return done
}

// releasePacked drops the CPU backend's packed copies of net's weights
// when its phase of a generation is over (unless Options.KeepPackedWeights),
// and lets the Go heap (and a GPU backend's activation pool) give back what
// the phase's activations used.
func (p *Pipeline) releasePacked(net any) {
	tensor.TrimPool()
	if t, ok := p.be.(interface{ TrimPool() (int64, error) }); ok {
		if _, err := t.TrimPool(); err != nil {
			p.log.Warn("freeing idle device activations failed", "err", err)
		}
	}
	if _, ok := p.be.(*tensor.CPU); !ok || p.keep || net == nil {
		return
	}
	tensor.ReleaseCPUWeights(nn.Weights(net))
	debug.FreeOSMemory()
}

// embed returns the text embeddings read as AUTOMATIC1111 does (emphasis,
// BREAK, textual inversion, 75-token chunks): [2, 77k, C] (negative then
// prompt, padded to the same number of chunks) when CFG is on, else
// [1, 77k, C].
func (p *Pipeline) embed(r Request) (*tensor.Tensor, error) {
	if r.CFG == 1 {
		z, _, err := p.enc.Encode(p.ops, r.Prompt, r.ClipSkip)
		return z, err
	}
	z, _, err := p.enc.EncodeCFG(p.ops, r.Prompt, r.Negative, r.ClipSkip)
	return z, err
}

// useLoras makes the text model and UNet carry the prompt's LoRAs, merging
// them when the set (names and strengths, in order) differs from the last
// generation's; a prompt without LoRAs returns to the base networks.
func (p *Pipeline) useLoras(text string) error {
	_, tags := prompt.ExtractTags(text)
	refs, err := prompt.LoraRefs(tags)
	if err != nil {
		return badRequest("%v", err)
	}
	key := "" // no LoRA: the base networks
	if len(refs) > 0 {
		key = fmt.Sprint(refs)
	}
	if key == p.loraKey {
		return nil
	}
	// A GPU backend caches device copies of weights by host address:
	// drop those of the previous LoRA set.
	if r, ok := p.be.(interface{ ReleaseWeights() error }); ok {
		if err := r.ReleaseWeights(); err != nil {
			return err
		}
	}
	if len(refs) == 0 {
		p.setNets(p.baseText, p.baseText2, p.baseUNet)
		p.loraKey = key
		return nil
	}
	var ls []lora.Loaded
	for _, r := range refs {
		f, err := p.loras.Get(r.Name)
		if err != nil {
			return err
		}
		ls = append(ls, lora.Loaded{File: f, TE: r.TE, UNet: r.UNet})
	}
	src, rep, err := lora.ApplyOptions(p.ck, ls, lora.Options{Backend: tensor.NewCPU(), KeepDType: true})
	if err != nil {
		return err
	}
	for _, u := range rep.Unmatched {
		p.log.Warn("LoRA tensor not applied", "lora", u.File, "key", u.Key, "reason", u.Reason)
	}
	tm, tm2, err := p.buildText(src, p.textCfg)
	if err != nil {
		return err
	}
	// p.unetCfg is the config Load ended with (SDXL's ADM channels, the
	// 64-channel heads of SD 2.x and SDXL single files).
	un, err := unet.Load(src, p.unetCfg)
	if err != nil {
		return err
	}
	p.setNets(tm, tm2, un)
	p.loraKey = key
	return nil
}

// setNets makes the pipeline and its prompt encoders use these networks
// (text2: SDXL's second text encoder, ignored for other families).
func (p *Pipeline) setNets(text *clip.TextModel, text2 *clip.OpenCLIP, u *unet.UNet) {
	p.text, p.unet, p.enc.Text = text, u, text
	if p.xl != nil && text2 != nil {
		p.xl.text2, p.xl.enc2.Text = text2, text2.TextModel
	}
}

// sample runs the sampler from seeded noise; it returns the final latent
// [4*h*w] for the latent size h x w.
func (p *Pipeline) sample(ctx context.Context, r Request, cond, y *tensor.Tensor) ([]float32, error) {
	f := p.vae.Config.Factor()
	h, w := r.Height/f, r.Width/f
	n := 4 * h * w
	noise, err := rng.New(r.RNG, uint64(r.Seed))
	if err != nil {
		return nil, err
	}
	x := r.InitNoise
	if x == nil {
		x = noise.Randn(n)
	} else {
		x = append([]float32(nil), x...)
	}
	sigmas, err := p.sched.Sigmas(r.Schedule, r.Steps)
	if err != nil {
		return nil, err
	}
	for i := range x {
		x[i] *= float32(sigmas[0])
	}
	// The text context is read by every step: on a device backend it
	// crosses once, here.
	dev := tensor.OnDevice(p.ops)
	condD, err := tensor.Upload(dev, cond)
	if err != nil {
		return nil, err
	}
	defer tensor.ReleaseUploaded(condD, cond)
	yD, err := tensor.Upload(dev, y)
	if err != nil {
		return nil, err
	}
	defer tensor.ReleaseUploaded(yD, y)
	denoise := p.denoiserY(condD, yD, h, w, float32(r.CFG))
	start := time.Now()
	progress := func(step, total int) {
		if r.Progress != nil {
			r.Progress(Progress{Step: step, Steps: total, Elapsed: time.Since(start)})
		}
	}
	return sample.Run(ctx, r.Sampler, x, sigmas, denoise, noise, progress)
}

// denoiser returns the model's denoiser D(x, sigma) for latents of size
// h x w: the UNet's eps (or v) prediction on x/sqrt(sigma²+1) at the
// timestep of sigma, combined by classifier-free guidance when cond holds
// [uncond, cond], and turned into the denoised latent (see denoised).
func (p *Pipeline) denoiser(cond *tensor.Tensor, h, w int, cfg float32) sample.Denoiser {
	return p.denoiserY(cond, nil, h, w, cfg)
}

// denoiserY is denoiser with SDXL's label_emb input y [B, ADM] (nil for
// SD 1.x/2.x).
func (p *Pipeline) denoiserY(cond, y *tensor.Tensor, h, w int, cfg float32) sample.Denoiser {
	n := 4 * h * w
	batch := cond.Shape[0]
	return func(ctx context.Context, x []float32, sigma float64) ([]float32, error) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		cin := float32(1 / math.Sqrt(sigma*sigma+1))
		in := tensor.Empty(batch, 4, h, w)
		for b := 0; b < batch; b++ {
			for i, v := range x {
				in.F32[b*n+i] = v * cin
			}
		}
		t := float32(p.sched.SigmaToT(sigma))
		ts := make([]float32, batch)
		for i := range ts {
			ts[i] = t
		}
		eps, err := p.unet.ForwardADM(p.ops, in, ts, cond, y) // cond and y: on the device already, if there is one
		tensor.Release(in)
		if err != nil {
			return nil, err
		}
		defer tensor.Release(eps)
		e := eps.F32
		out := make([]float32, n)
		for i := range out {
			ei := e[i]
			if batch == 2 { // [uncond, cond]
				ei = e[i] + cfg*(e[n+i]-e[i])
			}
			out[i] = denoised(p.pred, x[i], ei, sigma)
		}
		return out, nil
	}
}

// decode turns a latent [4*h*w] into an 8-bit image.
func (p *Pipeline) decode(ctx context.Context, latent []float32, h, w int) (image.Image, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	z := tensor.New(1, 4, h, w)
	inv := 1 / p.vae.Config.ScalingFactor
	for i, v := range latent {
		z.F32[i] = v * inv
	}
	x, err := p.decodeAt(z, p.vaeF32)
	if err != nil {
		return nil, err
	}
	if !finite(x.F32) {
		c, cpu := p.be.(*tensor.CPU)
		retry := ""
		switch {
		case cpu && c.Precision() == "bf16":
			retry = "VAE decode gave NaN or Inf in bf16; decoding again in f32"
		case !cpu && p.halfVAE():
			retry = "VAE decode gave NaN or Inf with 16-bit weights; decoding again with f32 weights"
		}
		if retry != "" {
			p.log.Warn(retry)
			if x, err = p.decodeAt(z, true); err != nil {
				return nil, err
			}
		}
		if !finite(x.F32) {
			return nil, errors.New("VAE decode gave NaN or Inf values (the latent or the VAE weights are broken); no image written")
		}
	}
	for i, v := range x.F32 { // [-1, 1] -> [0, 1]
		x.F32[i] = (v + 1) / 2
	}
	return imageio.FromTensor(x)
}

// decodeAt runs the VAE decoder, in f32 when f32 is set: the CPU backend
// switches its products from bf16 to f32 (restored afterwards); other
// backends, whose kernels round activations to the type of 16-bit weights,
// get the VAE's weights converted to f32 (upcastVAE), as diffusers'
// force_upcast and AUTOMATIC1111's --no-half-vae do.
func (p *Pipeline) decodeAt(z *tensor.Tensor, f32 bool) (*tensor.Tensor, error) {
	c, cpu := p.be.(*tensor.CPU)
	switch {
	case cpu && f32 && c.Precision() == "bf16":
		if err := c.SetPrecision("f32"); err != nil {
			return nil, err
		}
		defer c.SetPrecision("bf16")
	case !cpu && f32:
		p.upcastVAE()
	}
	return p.vae.Decode(p.ops, z)
}

// halfVAE reports whether any VAE weight is still 16-bit.
func (p *Pipeline) halfVAE() bool {
	for _, w := range nn.Weights(p.vae) {
		if w.DType != tensor.F32 {
			return true
		}
	}
	return false
}

// upcastVAE converts the VAE's 16-bit weights to f32, once (the converted
// tensors keep their f32 copies; the 16-bit data stays in the checkpoint
// file).
func (p *Pipeline) upcastVAE() {
	for _, w := range nn.Weights(p.vae) {
		if w.DType != tensor.F32 {
			*w = *tensor.FromF32(w.Float32s(), w.Shape...)
		}
	}
}

// checkMemory refuses sizes whose VAE decode would not fit in the memory
// available now. The decoder's peak is a handful of 128-channel f32 maps at
// full resolution (measured: see the README), estimated generously here.
func checkMemory(width, height int) error {
	need := uint64(width) * uint64(height) * 128 * 4 * 6
	avail, ok := AvailableMemory()
	if ok && need > avail {
		return badRequest("size %dx%d needs about %.1f GB of memory to decode, only %.1f GB is available",
			width, height, float64(need)/1e9, float64(avail)/1e9)
	}
	return nil
}

// AvailableMemory returns the memory the system can still give (MemAvailable
// in /proc/meminfo, bytes), and false where that cannot be read. Generate
// refuses sizes whose VAE decode would not fit in it.
func AvailableMemory() (uint64, bool) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		var kb uint64
		if _, err := fmt.Sscanf(line, "MemAvailable: %d kB", &kb); err == nil {
			return kb * 1024, true
		}
	}
	return 0, false
}
