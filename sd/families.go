package sd

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/clip"
	"github.com/gosd/gosd/sd/prompt"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/unet"
)

// Prediction types of the UNet's output.
const (
	// PredictionEps: the UNet predicts the noise (SD 1.x, SD 2.x 512 base, SDXL).
	PredictionEps = "eps"
	// PredictionV: the UNet predicts v = alpha*eps - sigma_t*x0 (SD 2.x 768-v).
	PredictionV = "v"
)

// KLScalingSDXL is the latent scaling factor of SDXL's autoencoder.
const KLScalingSDXL = 0.13025

// Prefix of SDXL's first text encoder (transformers CLIP ViT-L) in single files.
const prefixCLIPXL = "conditioner.embedders.0.transformer.text_model."

// xlCond is SDXL's second text encoder and size conditioning.
type xlCond struct {
	text2   *clip.OpenCLIP
	enc2    *prompt.Encoder
	timeDim int // Fourier features per size/crop number (256)
}

// Family is the loaded model family: "sd1", "sd2" or "sdxl".
func (p *Pipeline) Family() string { return p.family }

// Prediction is the UNet's prediction type in use: PredictionEps or PredictionV.
func (p *Pipeline) Prediction() string { return p.pred }

// PredictionSource says how Prediction was chosen: "option"
// (Options.Prediction), "scheduler_config.json" (a diffusers folder),
// "a1111-test" (SD 2.x single files: see detectPrediction) or "family"
// (eps for SD 1.x and SDXL single files).
func (p *Pipeline) PredictionSource() string { return p.predSrc }

// loadFamily builds the text encoder(s), UNet, VAE and schedule of the
// checkpoint's family and picks the prediction type.
func (p *Pipeline) loadFamily(rec *recorder, opts Options) error {
	var err error
	p.family = rec.Checkpoint.Family
	switch p.family {
	case "sd1":
		if p.text, err = loadText(rec); err != nil {
			return err
		}
	case "sd2":
		// SD 2.x conditions on the penultimate layer's output after
		// ln_final. Single files hold all 24 layers; diffusers folders
		// hold 23 (the last one dropped), so they use every layer.
		cfg, err := clip.InferOpenCLIPConfig(rec, clip.OpenCLIPPrefixSD2)
		if err != nil {
			return err
		}
		layers := cfg.Layers - 1
		if rec.Checkpoint.Diffusers != nil {
			layers = cfg.Layers
		}
		if layers < 1 {
			return fmt.Errorf("clip: SD 2.x OpenCLIP text model has %d layers", cfg.Layers)
		}
		p.openCfg, p.openLayers = &cfg, layers
		if p.text, _, err = p.buildText(rec, nil); err != nil {
			return err
		}
	case "sdxl":
		var cfg *clip.Config
		if raw := componentConfig(rec.Checkpoint, "text_encoder"); raw != nil {
			c, err := clip.ParseConfig(raw)
			if err != nil {
				return fmt.Errorf("text_encoder/config.json: %w", err)
			}
			cfg = &c
		}
		var oc *clip.OpenCLIP
		if p.text, oc, err = p.buildText(rec, cfg); err != nil {
			return err
		}
		p.xl = &xlCond{text2: oc}
	default:
		return fmt.Errorf("%s: not a Stable Diffusion 1.x, 2.x or XL checkpoint (no UNet with a known text context found)", rec.Checkpoint.Path)
	}
	if p.unet, err = loadUNet(rec); err != nil {
		return err
	}
	if p.family != "sd1" && componentConfig(rec.Checkpoint, "unet") == nil {
		// SD 2.x and SDXL use heads of 64 channels everywhere; the
		// inference only assumes so for the released context widths.
		cfg := *p.unet.Config
		cfg.Heads = append([]int(nil), cfg.Heads...)
		for i, m := range cfg.ChannelMult {
			cfg.Heads[i] = max(1, m*cfg.ModelChannels/64)
		}
		cfg.MidHeads = max(1, cfg.ChannelMult[len(cfg.ChannelMult)-1]*cfg.ModelChannels/64)
		if p.unet, err = unet.Load(rec, &cfg); err != nil {
			return err
		}
	}
	if want := p.text.Config.Hidden; p.xl != nil {
		want += p.xl.text2.Config.Hidden
		if p.unet.Config.ContextDim != want {
			return fmt.Errorf("unet: context width %d, the two text encoders give %d", p.unet.Config.ContextDim, want)
		}
		adm := p.unet.Config.ADMChannels - p.xl.text2.Projection.Shape[1]
		if adm <= 0 || adm%6 != 0 || adm/6%2 != 0 {
			return fmt.Errorf("unet: label_emb input %d does not fit the pooled text width %d plus 6 size numbers",
				p.unet.Config.ADMChannels, p.xl.text2.Projection.Shape[1])
		}
		p.xl.timeDim = adm / 6
	} else if p.unet.Config.ContextDim != want {
		return fmt.Errorf("unet: context width %d, the text encoder gives %d", p.unet.Config.ContextDim, want)
	} else if p.unet.Config.ADMChannels != 0 {
		return fmt.Errorf("unet: a %s UNet with label_emb is not supported", p.family)
	}
	if p.vae, err = loadVAE(rec); err != nil {
		return err
	}
	if p.family == "sdxl" && componentConfig(rec.Checkpoint, "vae") == nil {
		p.vae.Config.ScalingFactor = KLScalingSDXL
	}
	if p.sched, err = loadSchedule(rec); err != nil {
		return err
	}
	p.pred, p.predSrc, err = p.detectPrediction(opts.Prediction)
	markKnownUnused(rec)
	return err
}

// buildText builds the text encoder(s) of p.family from src (ldm names):
// SD 1.x's CLIP (cfg, nil: inferred), SD 2.x's OpenCLIP (p.openCfg,
// p.openLayers layers), or SDXL's CLIP ViT-L (cfg) and OpenCLIP bigG with
// its projection (text2), both without final norm. Load and useLoras (on
// LoRA-merged weights) both build through it.
func (p *Pipeline) buildText(src tensor.Source, cfg *clip.Config) (text *clip.TextModel, text2 *clip.OpenCLIP, err error) {
	switch p.family {
	case "sd1":
		text, err = clip.Load(src, prefixCLIP, cfg)
		return text, nil, err
	case "sd2":
		oc, err := clip.LoadOpenCLIP(src, clip.OpenCLIPPrefixSD2, p.openCfg, p.openLayers)
		if err != nil {
			return nil, nil, err
		}
		return oc.TextModel, nil, nil
	case "sdxl":
		if text, err = clip.Load(src, prefixCLIPXL, cfg); err != nil {
			return nil, nil, err
		}
		text.SkipFinalNorm = true
		oc, err := clip.LoadOpenCLIP(src, clip.OpenCLIPPrefixSDXL, p.openCfg, p.openLayers)
		if err != nil {
			return nil, nil, err
		}
		if oc.Projection == nil {
			return nil, nil, fmt.Errorf("clip: SDXL's OpenCLIP text model has no %stext_projection", clip.OpenCLIPPrefixSDXL)
		}
		oc.SkipFinalNorm = true
		return text, oc, nil
	}
	return nil, nil, fmt.Errorf("sd: no text encoder for family %q", p.family)
}

// markKnownUnused marks the tensors SD 2.x and SDXL files carry that the
// pipeline deliberately does not read, so that they raise no warning:
// OpenCLIP's logit_scale, SD 2.x's text_projection and last layer (it
// conditions on the penultimate one) and SDXL CLIP's position_ids.
func markKnownUnused(rec *recorder) {
	last := -1
	for _, n := range rec.Checkpoint.Names() {
		if rest, ok := strings.CutPrefix(n, clip.OpenCLIPPrefixSD2+"transformer.resblocks."); ok {
			var i int
			if _, err := fmt.Sscanf(rest, "%d.", &i); err == nil {
				last = max(last, i)
			}
		}
	}
	lastLayer := fmt.Sprintf("%stransformer.resblocks.%d.", clip.OpenCLIPPrefixSD2, last)
	for _, n := range rec.Checkpoint.Names() {
		switch {
		case strings.HasSuffix(n, "model.logit_scale"), n == clip.OpenCLIPPrefixSD2+"text_projection",
			n == prefixCLIPXL+"embeddings.position_ids",
			last >= 0 && rec.Checkpoint.Diffusers == nil && strings.HasPrefix(n, lastLayer):
			rec.used[n] = true
		}
	}
}

// detectPrediction picks the prediction type: an explicit choice, then a
// diffusers scheduler config's prediction_type, then for SD 2.x single
// files AUTOMATIC1111's test (the UNet at t=999 on a constant 0.5 latent
// 8x8 with a constant 0.5 context of 2 tokens: a mean of output minus
// input below -1 means v-prediction; the released 768-v models give about
// -1.3 or less, the eps models about 0), else eps.
func (p *Pipeline) detectPrediction(explicit string) (pred, source string, err error) {
	switch strings.ToLower(explicit) {
	case "eps", "epsilon":
		return PredictionEps, "option", nil
	case "v", "v_prediction", "v-prediction":
		return PredictionV, "option", nil
	case "":
	default:
		return "", "", fmt.Errorf("prediction type %q: want eps or v", explicit)
	}
	if raw := componentConfig(p.ck, "scheduler"); raw != nil {
		var sc struct {
			Prediction string `json:"prediction_type"`
		}
		const src = "scheduler_config.json"
		if err := json.Unmarshal(raw, &sc); err != nil {
			return "", "", fmt.Errorf("scheduler/scheduler_config.json: %w", err)
		}
		switch sc.Prediction {
		case "", "epsilon":
			return PredictionEps, src, nil
		case "v_prediction":
			return PredictionV, src, nil
		}
		return "", "", fmt.Errorf("scheduler/scheduler_config.json: prediction_type %q not supported", sc.Prediction)
	}
	if p.family != "sd2" {
		return PredictionEps, "family", nil
	}
	v, err := isVPrediction(p.be, p.unet)
	if err != nil {
		return "", "", err
	}
	if v {
		return PredictionV, "a1111-test", nil
	}
	return PredictionEps, "a1111-test", nil
}

// isVPrediction runs AUTOMATIC1111's SD 2.x v-parameterization test.
func isVPrediction(be tensor.Backend, u *unet.UNet) (bool, error) {
	c := u.Config
	x := tensor.New(1, c.InChannels, 8, 8)
	for i := range x.F32 {
		x.F32[i] = 0.5
	}
	ctx := tensor.New(1, 2, c.ContextDim)
	for i := range ctx.F32 {
		ctx.F32[i] = 0.5
	}
	out, err := u.Forward(be, x, []float32{999}, ctx)
	if err != nil {
		return false, err
	}
	var sum float64
	for _, v := range out.F32 {
		sum += float64(v) - 0.5
	}
	return sum/float64(len(out.F32)) < -1, nil
}

// denoised combines the noisy latent x at sigma with the (guided) model
// output m into the denoised estimate: for eps, x - sigma*m; for v, with
// c_skip = 1/(sigma²+1) and c_out = -sigma/sqrt(sigma²+1),
// c_skip*x + c_out*m.
func denoised(pred string, x, m float32, sigma float64) float32 {
	if pred == PredictionV {
		s2 := sigma*sigma + 1
		return float32(float64(x)/s2 - sigma/math.Sqrt(s2)*float64(m))
	}
	return x - float32(sigma)*m
}

// embedFamily returns the conditioning of SD 2.x and SDXL: the context
// [B, 77k, C] (B = 2 with CFG: negative then prompt) and, for SDXL, the
// label_emb vector y [B, ADMChannels]; y is nil for SD 2.x.
//
// Prompts are split and weighted as AUTOMATIC1111 does. OpenCLIP
// encoders pad each chunk with 0 after its end token (open_clip's
// tokenizer, A1111's id_pad = 0 for OpenCLIP, diffusers' "!" pad token of
// SD 2.x and SDXL's tokenizer_2); SDXL's CLIP ViT-L pads with the end
// token as SD 1.x. SDXL's context is the penultimate hidden state of both
// encoders without final norm, concatenated (768 + 1280 = 2048); SD 2.x's
// is the penultimate layer after ln_final (clip skip counts from there).
// SDXL's pooled vector is read from the first chunk of each prompt.
func (p *Pipeline) embedFamily(r Request, width, height int) (*tensor.Tensor, *tensor.Tensor, error) {
	texts := []string{r.Prompt}
	if r.CFG != 1 {
		texts = []string{r.Negative, r.Prompt}
	}
	var chunks [][]prompt.Chunk
	n := 0
	for i, t := range texts {
		if i == len(texts)-1 {
			t, _ = prompt.ExtractTags(t)
		}
		c, err := p.enc.Chunks(t)
		if err != nil {
			return nil, nil, err
		}
		chunks = append(chunks, c)
		n = max(n, len(c))
	}
	var all []prompt.Chunk
	for _, c := range chunks {
		for len(c) < n {
			c = append(c, p.enc.EmptyChunk())
		}
		all = append(all, c...)
	}
	B, L := len(texts), clip.ContextLength
	zeroPadded := make([]prompt.Chunk, len(all))
	for i, c := range all {
		zeroPadded[i] = padZero(c, p.tok.EndID)
	}
	if p.xl == nil { // SD 2.x
		z, err := p.enc.EncodeChunks(p.ops, zeroPadded, r.ClipSkip)
		if err != nil {
			return nil, nil, err
		}
		return z.Reshape(B, n*L, p.text.Config.Hidden), nil, nil
	}
	z1, err := p.enc.EncodeChunks(p.ops, all, 2)
	if err != nil {
		return nil, nil, err
	}
	// The chunks carry the first encoder's textual-inversion vectors; the
	// second encoder takes the same embeddings' clip_g vectors.
	chunks2 := make([]prompt.Chunk, len(zeroPadded))
	for i, c := range zeroPadded {
		chunks2[i] = c
		chunks2[i].Fixes = nil
		for _, f := range c.Fixes {
			e, ok := p.xl.enc2.Embeddings.Get(f.Embedding.Name)
			if !ok {
				return nil, nil, fmt.Errorf("embedding %s has no vectors for SDXL's second text encoder", f.Embedding.Name)
			}
			chunks2[i].Fixes = append(chunks2[i].Fixes, prompt.Fix{Offset: f.Offset, Embedding: e})
		}
	}
	z2, err := p.xl.enc2.EncodeChunks(p.ops, chunks2, 2)
	if err != nil {
		return nil, nil, err
	}
	c1, c2 := p.text.Config.Hidden, p.xl.text2.Config.Hidden
	ctx := tensor.New(B, n*L, c1+c2)
	for row := 0; row < B*n*L; row++ {
		copy(ctx.F32[row*(c1+c2):], z1.F32[row*c1:(row+1)*c1])
		copy(ctx.F32[row*(c1+c2)+c1:], z2.F32[row*c2:(row+1)*c2])
	}
	first := make([][]int, B)
	for b := range first {
		first[b] = zeroPadded[b*n].Tokens
	}
	pooled, err := p.xl.text2.Pooled(p.ops, first)
	if err != nil {
		return nil, nil, err
	}
	return ctx, sdxlVector(pooled, height, width, p.xl.timeDim), nil
}

// padZero returns c with every token after its first end token set to 0.
func padZero(c prompt.Chunk, endID int) prompt.Chunk {
	out := c
	out.Tokens = append([]int(nil), c.Tokens...)
	for i := 1; i < len(out.Tokens); i++ {
		if out.Tokens[i] == endID {
			for j := i + 1; j < len(out.Tokens); j++ {
				out.Tokens[j] = 0
			}
			break
		}
	}
	return out
}

// sdxlVector builds SDXL's label_emb input: pooled [B, P] followed by the
// Fourier features (ldm's timestep embedding, dim each) of the original
// size (h, w), the crop's top-left corner (0, 0) and the target size
// (h, w): y [B, P + 6*dim]. As in AUTOMATIC1111, original and target size
// are the requested size.
func sdxlVector(pooled *tensor.Tensor, height, width, dim int) *tensor.Tensor {
	B, P := pooled.Shape[0], pooled.Shape[1]
	nums := []float32{float32(height), float32(width), 0, 0, float32(height), float32(width)}
	f := unet.TimestepEmbedding(nums, dim) // [6, dim]
	y := tensor.New(B, P+6*dim)
	for b := 0; b < B; b++ {
		copy(y.F32[b*(P+6*dim):], pooled.F32[b*P:(b+1)*P])
		copy(y.F32[b*(P+6*dim)+P:], f.F32)
	}
	return y
}

// newFamilyEncoders builds the prompt encoders; textual-inversion
// embeddings are used with SD 1.x and 2.x (one text encoder) only.
func (p *Pipeline) newFamilyEncoders(opts Options) error {
	var embs, embs2 *prompt.Embeddings
	var err error
	if opts.EmbeddingsDir != "" {
		if p.xl != nil {
			// SDXL embeddings hold one set of vectors per text encoder.
			if embs, err = prompt.LoadEmbeddingsDirKey(opts.EmbeddingsDir, p.text.Config.Hidden, "clip_l"); err != nil {
				return err
			}
			if embs2, err = prompt.LoadEmbeddingsDirKey(opts.EmbeddingsDir, p.xl.text2.TextModel.Config.Hidden, "clip_g"); err != nil {
				return err
			}
		} else if embs, err = prompt.LoadEmbeddingsDir(opts.EmbeddingsDir, p.text.Config.Hidden); err != nil {
			return err
		}
	}
	if p.enc, err = prompt.NewEncoder(p.tok, p.text, embs); err != nil {
		return err
	}
	if p.xl != nil {
		if p.xl.enc2, err = prompt.NewEncoder(p.tok, p.xl.text2.TextModel, embs2); err != nil {
			return err
		}
	}
	return nil
}

// PredictionHint tells, without building any network, what Load would
// use as the prediction type of an opened checkpoint, for display (gosd
// inspect): a diffusers folder's scheduler prediction_type
// ("scheduler_config.json"), eps for SD 1.x and SDXL single files
// ("family"), and for SD 2.x single files pred "" with source
// "a1111-test" (decided at load by running the UNet once; the 768-v
// releases give v, the 512 base eps).
func PredictionHint(ck *ckpt.Checkpoint) (pred, source string, err error) {
	p := &Pipeline{ck: ck, family: ck.Family}
	if componentConfig(ck, "scheduler") == nil && ck.Family == "sd2" {
		return "", "a1111-test", nil
	}
	return p.detectPrediction("")
}
