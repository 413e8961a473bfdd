package testmodel

import (
	"fmt"
	"math"
	"sort"
)

// config holds the sizes of one SD 1.x-style model. ldm naming throughout.
type config struct {
	unetCh     int    // model_channels
	unetMult   []int  // channel_mult
	unetAttn   []bool // attention at each level
	unetNumRes int    // num_res_blocks
	unetIn     int
	unetOut    int
	unetHeads  int // num_heads (diffusers attention_head_dim in SD 1.x configs)
	ctxDim     int // cross-attention context width (= CLIP width)

	vaeCh     int
	vaeMult   []int
	vaeNumRes int
	vaeZ      int
	vaeEmbed  int

	clipVocab  int
	clipPos    int
	clipDim    int
	clipFF     int
	clipLayers int
	clipHeads  int

	// SD 2.x / SDXL additions (zero for SD 1.x).
	family     string // "sd15", "sd21" or "sdxl"
	linear     bool   // linear proj_in/proj_out (use_linear_in_transformer)
	unetDepth  []int  // transformer depth per level (nil: 1 everywhere)
	midDepth   int    // middle block transformer depth (0: 1)
	unetHeadCh int    // >0: heads = level width / unetHeadCh (SD 2.x, SDXL)
	admIn      int    // label_emb input width (SDXL: pooled + 6 x timeDim)
	timeDim    int    // Fourier features per size/crop number (SDXL: 256)
	noCLIP     bool   // no transformers CLIP text model (SD 2.x)
	clipPrefix string // ldm prefix of the CLIP text model

	ocPrefix string // ldm prefix of the OpenCLIP text model ("" for none)
	ocDim    int
	ocFF     int
	ocLayers int // resblocks stored in the single file
	ocProj   int // text_projection width
}

// heads returns the attention heads at a UNet width.
func (c *config) heads(width int) int {
	if c.unetHeadCh > 0 {
		return max(1, width/c.unetHeadCh)
	}
	return c.unetHeads
}

func (c *config) depth(level int) int {
	if c.unetDepth == nil {
		return 1
	}
	return c.unetDepth[level]
}

func (c *config) mid() int { return max(1, c.midDepth) }

// sd21Full is the released Stable Diffusion 2.1 configuration (512 base
// and 768-v have the same shapes).
var sd21Full = config{
	family: "sd21", unetCh: 320, unetMult: []int{1, 2, 4, 4}, unetAttn: []bool{true, true, true, false}, unetNumRes: 2,
	unetIn: 4, unetOut: 4, unetHeadCh: 64, ctxDim: 1024, linear: true,
	vaeCh: 128, vaeMult: []int{1, 2, 4, 4}, vaeNumRes: 2, vaeZ: 4, vaeEmbed: 4,
	noCLIP: true, clipVocab: 49408, clipPos: 77,
	ocPrefix: "cond_stage_model.model.", ocDim: 1024, ocFF: 4096, ocLayers: 24, ocProj: 1024,
}

// sd21Tiny is SD 2.1's structure scaled down: two UNet levels (64, 128
// wide, heads of 64 channels: 1 and 2 heads), linear projections, a
// 3-layer 64-wide OpenCLIP (the pipeline uses 2), the tiny SD 1.5 VAE.
var sd21Tiny = config{
	family: "sd21", unetCh: 64, unetMult: []int{1, 2}, unetAttn: []bool{true, true}, unetNumRes: 1,
	unetIn: 4, unetOut: 4, unetHeadCh: 64, ctxDim: 64, linear: true,
	vaeCh: 32, vaeMult: []int{1, 2}, vaeNumRes: 1, vaeZ: 4, vaeEmbed: 4,
	noCLIP: true, clipVocab: 49408, clipPos: 77,
	ocPrefix: "cond_stage_model.model.", ocDim: 64, ocFF: 256, ocLayers: 3, ocProj: 64,
}

// sdxlFull is the released SDXL 1.0 base configuration.
var sdxlFull = config{
	family: "sdxl", unetCh: 320, unetMult: []int{1, 2, 4}, unetAttn: []bool{false, true, true}, unetNumRes: 2,
	unetIn: 4, unetOut: 4, unetHeadCh: 64, ctxDim: 2048, linear: true, unetDepth: []int{0, 2, 10}, midDepth: 10,
	admIn: 2816, timeDim: 256,
	vaeCh: 128, vaeMult: []int{1, 2, 4, 4}, vaeNumRes: 2, vaeZ: 4, vaeEmbed: 4,
	clipPrefix: "conditioner.embedders.0.transformer.text_model.",
	clipVocab:  49408, clipPos: 77, clipDim: 768, clipFF: 3072, clipLayers: 12, clipHeads: 12,
	ocPrefix: "conditioner.embedders.1.model.", ocDim: 1280, ocFF: 5120, ocLayers: 32, ocProj: 1280,
}

// sdxlTiny is SDXL's structure scaled down: three UNet levels (64, 128,
// 128 wide) with no attention at level 0, depths [0, 1, 2] and middle 2,
// heads of 64 channels, a 64-wide CLIP (2 layers) and a 128-wide OpenCLIP
// (3 layers, projection to 64, deliberately not square) whose hidden
// states concatenate to a 192-wide context, label_emb input 64 + 6 x 16.
var sdxlTiny = config{
	family: "sdxl", unetCh: 64, unetMult: []int{1, 2, 2}, unetAttn: []bool{false, true, true}, unetNumRes: 1,
	unetIn: 4, unetOut: 4, unetHeadCh: 64, ctxDim: 192, linear: true, unetDepth: []int{0, 1, 2}, midDepth: 2,
	admIn: 64 + 6*16, timeDim: 16,
	vaeCh: 32, vaeMult: []int{1, 2}, vaeNumRes: 1, vaeZ: 4, vaeEmbed: 4,
	clipPrefix: "conditioner.embedders.0.transformer.text_model.",
	clipVocab:  49408, clipPos: 77, clipDim: 64, clipFF: 256, clipLayers: 2, clipHeads: 1,
	ocPrefix: "conditioner.embedders.1.model.", ocDim: 128, ocFF: 512, ocLayers: 3, ocProj: 64,
}

// sd15Full is the released Stable Diffusion 1.5 configuration.
var sd15Full = config{
	unetCh: 320, unetMult: []int{1, 2, 4, 4}, unetAttn: []bool{true, true, true, false}, unetNumRes: 2,
	unetIn: 4, unetOut: 4, unetHeads: 8, ctxDim: 768,
	vaeCh: 128, vaeMult: []int{1, 2, 4, 4}, vaeNumRes: 2, vaeZ: 4, vaeEmbed: 4,
	clipVocab: 49408, clipPos: 77, clipDim: 768, clipFF: 3072, clipLayers: 12, clipHeads: 12,
}

// sd15Tiny is the small test configuration every gosd helper builds to.
var sd15Tiny = config{
	unetCh: 32, unetMult: []int{1, 2}, unetAttn: []bool{true, true}, unetNumRes: 1,
	unetIn: 4, unetOut: 4, unetHeads: 8, ctxDim: 64,
	vaeCh: 32, vaeMult: []int{1, 2}, vaeNumRes: 1, vaeZ: 4, vaeEmbed: 4,
	clipVocab: 49408, clipPos: 77, clipDim: 64, clipFF: 256, clipLayers: 2, clipHeads: 1,
}

type initKind int

const (
	initNormal initKind = iota
	initOnes
	initZeros
	initValues // explicit values (schedule buffers, scalars, ids)
)

// Spec is one tensor of a generated model: its ldm name, stored dtype
// ("F32", "F16", "BF16", "I64", "I32") and shape.
type Spec struct {
	Name  string
	DType string
	Shape []int

	init   initKind
	values []float64
}

type layout struct {
	wdtype string
	specs  []*Spec
}

func (l *layout) add(name, dtype string, kind initKind, shape ...int) *Spec {
	s := &Spec{Name: name, DType: dtype, Shape: shape, init: kind}
	l.specs = append(l.specs, s)
	return s
}

func (l *layout) w(name string, shape ...int) { l.add(name, l.wdtype, initNormal, shape...) }

func (l *layout) linear(p string, in, out int, bias bool) {
	l.w(p+".weight", out, in)
	if bias {
		l.w(p+".bias", out)
	}
}

func (l *layout) conv(p string, in, out, k int) {
	l.w(p+".weight", out, in, k, k)
	l.w(p+".bias", out)
}

func (l *layout) norm(p string, c int) {
	l.add(p+".weight", l.wdtype, initOnes, c)
	l.add(p+".bias", l.wdtype, initZeros, c)
}

func (l *layout) unetRes(c *config, p string, in, out int) {
	l.norm(p+".in_layers.0", in)
	l.conv(p+".in_layers.2", in, out, 3)
	l.linear(p+".emb_layers.1", 4*c.unetCh, out, true)
	l.norm(p+".out_layers.0", out)
	l.conv(p+".out_layers.3", out, out, 3)
	if in != out {
		l.conv(p+".skip_connection", in, out, 1)
	}
}

func (l *layout) unetTransformer(cf *config, p string, c, depth int) {
	l.norm(p+".norm", c)
	if cf.linear {
		l.linear(p+".proj_in", c, c, true)
		l.linear(p+".proj_out", c, c, true)
	} else {
		l.conv(p+".proj_in", c, c, 1)
		l.conv(p+".proj_out", c, c, 1)
	}
	for d := 0; d < depth; d++ {
		l.transformerBlock(cf, fmt.Sprintf("%s.transformer_blocks.%d", p, d), c)
	}
}

func (l *layout) transformerBlock(cf *config, b string, c int) {
	l.linear(b+".attn1.to_q", c, c, false)
	l.linear(b+".attn1.to_k", c, c, false)
	l.linear(b+".attn1.to_v", c, c, false)
	l.linear(b+".attn1.to_out.0", c, c, true)
	l.linear(b+".ff.net.0.proj", c, 8*c, true) // GEGLU: 2 x (4c)
	l.linear(b+".ff.net.2", 4*c, c, true)
	l.linear(b+".attn2.to_q", c, c, false)
	l.linear(b+".attn2.to_k", cf.ctxDim, c, false)
	l.linear(b+".attn2.to_v", cf.ctxDim, c, false)
	l.linear(b+".attn2.to_out.0", c, c, true)
	l.norm(b+".norm1", c)
	l.norm(b+".norm2", c)
	l.norm(b+".norm3", c)
}

func (l *layout) addUNet(c *config) {
	const P = "model.diffusion_model."
	l.linear(P+"time_embed.0", c.unetCh, 4*c.unetCh, true)
	l.linear(P+"time_embed.2", 4*c.unetCh, 4*c.unetCh, true)
	if c.admIn > 0 {
		l.linear(P+"label_emb.0.0", c.admIn, 4*c.unetCh, true)
		l.linear(P+"label_emb.0.2", 4*c.unetCh, 4*c.unetCh, true)
	}
	l.conv(P+"input_blocks.0.0", c.unetIn, c.unetCh, 3)
	chans := []int{c.unetCh}
	ch, idx := c.unetCh, 1
	for level, m := range c.unetMult {
		for r := 0; r < c.unetNumRes; r++ {
			out := m * c.unetCh
			l.unetRes(c, fmt.Sprintf("%sinput_blocks.%d.0", P, idx), ch, out)
			ch = out
			if c.unetAttn[level] {
				l.unetTransformer(c, fmt.Sprintf("%sinput_blocks.%d.1", P, idx), ch, c.depth(level))
			}
			chans = append(chans, ch)
			idx++
		}
		if level != len(c.unetMult)-1 {
			l.conv(fmt.Sprintf("%sinput_blocks.%d.0.op", P, idx), ch, ch, 3)
			chans = append(chans, ch)
			idx++
		}
	}
	l.unetRes(c, P+"middle_block.0", ch, ch)
	l.unetTransformer(c, P+"middle_block.1", ch, c.mid())
	l.unetRes(c, P+"middle_block.2", ch, ch)
	idx = 0
	for level := len(c.unetMult) - 1; level >= 0; level-- {
		for i := 0; i <= c.unetNumRes; i++ {
			skip := chans[len(chans)-1]
			chans = chans[:len(chans)-1]
			out := c.unetMult[level] * c.unetCh
			l.unetRes(c, fmt.Sprintf("%soutput_blocks.%d.0", P, idx), ch+skip, out)
			ch = out
			layer := 1
			if c.unetAttn[level] {
				l.unetTransformer(c, fmt.Sprintf("%soutput_blocks.%d.1", P, idx), ch, c.depth(level))
				layer = 2
			}
			if level > 0 && i == c.unetNumRes {
				l.conv(fmt.Sprintf("%soutput_blocks.%d.%d.conv", P, idx, layer), ch, ch, 3)
			}
			idx++
		}
	}
	l.norm(P+"out.0", c.unetCh)
	l.conv(P+"out.2", c.unetCh, c.unetOut, 3)
}

func (l *layout) vaeRes(p string, in, out int) {
	l.norm(p+".norm1", in)
	l.conv(p+".conv1", in, out, 3)
	l.norm(p+".norm2", out)
	l.conv(p+".conv2", out, out, 3)
	if in != out {
		l.conv(p+".nin_shortcut", in, out, 1)
	}
}

func (l *layout) vaeAttn(p string, c int) {
	l.norm(p+".norm", c)
	l.conv(p+".q", c, c, 1)
	l.conv(p+".k", c, c, 1)
	l.conv(p+".v", c, c, 1)
	l.conv(p+".proj_out", c, c, 1)
}

func (l *layout) addVAE(c *config) {
	const P = "first_stage_model."
	e := P + "encoder."
	l.conv(e+"conv_in", 3, c.vaeCh, 3)
	inMult := append([]int{1}, c.vaeMult...)
	var blockIn int
	for i := range c.vaeMult {
		blockIn = c.vaeCh * inMult[i]
		blockOut := c.vaeCh * c.vaeMult[i]
		for b := 0; b < c.vaeNumRes; b++ {
			l.vaeRes(fmt.Sprintf("%sdown.%d.block.%d", e, i, b), blockIn, blockOut)
			blockIn = blockOut
		}
		if i != len(c.vaeMult)-1 {
			l.conv(fmt.Sprintf("%sdown.%d.downsample.conv", e, i), blockIn, blockIn, 3)
		}
	}
	l.vaeRes(e+"mid.block_1", blockIn, blockIn)
	l.vaeAttn(e+"mid.attn_1", blockIn)
	l.vaeRes(e+"mid.block_2", blockIn, blockIn)
	l.norm(e+"norm_out", blockIn)
	l.conv(e+"conv_out", blockIn, 2*c.vaeZ, 3)

	d := P + "decoder."
	blockIn = c.vaeCh * c.vaeMult[len(c.vaeMult)-1]
	l.conv(d+"conv_in", c.vaeZ, blockIn, 3)
	l.vaeRes(d+"mid.block_1", blockIn, blockIn)
	l.vaeAttn(d+"mid.attn_1", blockIn)
	l.vaeRes(d+"mid.block_2", blockIn, blockIn)
	for i := len(c.vaeMult) - 1; i >= 0; i-- {
		blockOut := c.vaeCh * c.vaeMult[i]
		for b := 0; b <= c.vaeNumRes; b++ {
			l.vaeRes(fmt.Sprintf("%sup.%d.block.%d", d, i, b), blockIn, blockOut)
			blockIn = blockOut
		}
		if i != 0 {
			l.conv(fmt.Sprintf("%sup.%d.upsample.conv", d, i), blockIn, blockIn, 3)
		}
	}
	l.norm(d+"norm_out", blockIn)
	l.conv(d+"conv_out", blockIn, 3, 3)
	l.conv(P+"quant_conv", 2*c.vaeZ, 2*c.vaeEmbed, 1)
	l.conv(P+"post_quant_conv", c.vaeEmbed, c.vaeZ, 1)
}

func (l *layout) addCLIP(c *config) {
	if c.noCLIP {
		return
	}
	P := c.clipPrefix
	if P == "" {
		P = "cond_stage_model.transformer.text_model."
	}
	l.w(P+"embeddings.token_embedding.weight", c.clipVocab, c.clipDim)
	l.w(P+"embeddings.position_embedding.weight", c.clipPos, c.clipDim)
	ids := l.add(P+"embeddings.position_ids", "I64", initValues, 1, c.clipPos)
	ids.values = make([]float64, c.clipPos)
	for i := range ids.values {
		ids.values[i] = float64(i)
	}
	for i := 0; i < c.clipLayers; i++ {
		p := fmt.Sprintf("%sencoder.layers.%d.", P, i)
		l.linear(p+"self_attn.k_proj", c.clipDim, c.clipDim, true)
		l.linear(p+"self_attn.v_proj", c.clipDim, c.clipDim, true)
		l.linear(p+"self_attn.q_proj", c.clipDim, c.clipDim, true)
		l.linear(p+"self_attn.out_proj", c.clipDim, c.clipDim, true)
		l.norm(p+"layer_norm1", c.clipDim)
		l.linear(p+"mlp.fc1", c.clipDim, c.clipFF, true)
		l.linear(p+"mlp.fc2", c.clipFF, c.clipDim, true)
		l.norm(p+"layer_norm2", c.clipDim)
	}
	l.norm(P+"final_layer_norm", c.clipDim)
}

// addOpenCLIP adds an OpenCLIP text transformer in open_clip's names.
func (l *layout) addOpenCLIP(c *config) {
	if c.ocPrefix == "" {
		return
	}
	P, C := c.ocPrefix, c.ocDim
	l.w(P+"token_embedding.weight", c.clipVocab, C)
	l.w(P+"positional_embedding", c.clipPos, C)
	for i := 0; i < c.ocLayers; i++ {
		p := fmt.Sprintf("%stransformer.resblocks.%d.", P, i)
		l.norm(p+"ln_1", C)
		l.w(p+"attn.in_proj_weight", 3*C, C)
		l.w(p+"attn.in_proj_bias", 3*C)
		l.linear(p+"attn.out_proj", C, C, true)
		l.norm(p+"ln_2", C)
		l.linear(p+"mlp.c_fc", C, c.ocFF, true)
		l.linear(p+"mlp.c_proj", c.ocFF, C, true)
	}
	l.norm(P+"ln_final", C)
	l.w(P+"text_projection", C, c.ocProj)
	s := l.add(P+"logit_scale", l.wdtype, initValues)
	s.values = []float64{math.Log(1 / 0.07)}
}

// addSchedule adds the ldm DDPM buffers for the scaled-linear schedule
// (beta 0.00085..0.012 over 1000 steps) and the model_ema scalars, computed
// in float64 as ldm's register_schedule does.
func (l *layout) addSchedule() {
	for _, b := range ScheduleBuffers() {
		s := l.add(b.Name, "F32", initValues, len(b.Values))
		s.values = b.Values
	}
	s := l.add("model_ema.decay", "F32", initValues)
	s.values = []float64{0.9999}
	s = l.add("model_ema.num_updates", "I32", initValues)
	s.values = []float64{0}
}

// Buffer is a named float64 schedule buffer.
type Buffer struct {
	Name   string
	Values []float64
}

// ScheduleBuffers returns the 12 DDPM buffers an SD 1.x ldm checkpoint
// stores (betas, alphas_cumprod, ..., posterior_mean_coef2), 1000 values each.
func ScheduleBuffers() []Buffer {
	const n, start, end = 1000, 0.00085, 0.0120
	betas := make([]float64, n)
	a0, a1 := sqrt(start), sqrt(end)
	for i := range betas {
		v := a0 + (a1-a0)*float64(i)/float64(n-1)
		betas[i] = v * v
	}
	alphas, ac, acPrev := make([]float64, n), make([]float64, n), make([]float64, n)
	prod := 1.0
	for i := range betas {
		alphas[i] = 1 - betas[i]
		acPrev[i] = prod
		prod *= alphas[i]
		ac[i] = prod
	}
	mk := func(f func(i int) float64) []float64 {
		out := make([]float64, n)
		for i := range out {
			out[i] = f(i)
		}
		return out
	}
	post := func(i int) float64 { return betas[i] * (1 - acPrev[i]) / (1 - ac[i]) }
	return []Buffer{
		{"betas", betas},
		{"alphas_cumprod", ac},
		{"alphas_cumprod_prev", acPrev},
		{"sqrt_alphas_cumprod", mk(func(i int) float64 { return sqrt(ac[i]) })},
		{"sqrt_one_minus_alphas_cumprod", mk(func(i int) float64 { return sqrt(1 - ac[i]) })},
		{"log_one_minus_alphas_cumprod", mk(func(i int) float64 { return log(1 - ac[i]) })},
		{"sqrt_recip_alphas_cumprod", mk(func(i int) float64 { return sqrt(1 / ac[i]) })},
		{"sqrt_recipm1_alphas_cumprod", mk(func(i int) float64 { return sqrt(1/ac[i] - 1) })},
		{"posterior_variance", mk(post)},
		{"posterior_log_variance_clipped", mk(func(i int) float64 { return log(max(post(i), 1e-20)) })},
		{"posterior_mean_coef1", mk(func(i int) float64 { return betas[i] * sqrt(acPrev[i]) / (1 - ac[i]) })},
		{"posterior_mean_coef2", mk(func(i int) float64 { return (1 - acPrev[i]) * sqrt(alphas[i]) / (1 - ac[i]) })},
	}
}

func buildLayout(c *config, wdtype string) []*Spec {
	l := &layout{wdtype: wdtype}
	l.addUNet(c)
	l.addVAE(c)
	l.addCLIP(c)
	l.addOpenCLIP(c)
	if c.family != "sdxl" { // SDXL files carry no DDPM buffers
		l.addSchedule()
	}
	sort.Slice(l.specs, func(i, j int) bool { return l.specs[i].Name < l.specs[j].Name })
	return l.specs
}
