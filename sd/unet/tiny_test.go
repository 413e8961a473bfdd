package unet

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/gosd/gosd/sd/tensor"
)

// tinyConfig is the tiny test UNet shared with the test-model generator:
// in 4, out 4, model channels 32, channel mult [1 2], one residual block per
// level, attention at both levels with depth 1 and 8 heads, context 64,
// 32 groups.
func tinyConfig() *Config {
	return &Config{
		InChannels: 4, OutChannels: 4, ModelChannels: 32, ChannelMult: []int{1, 2}, NumResBlocks: 1,
		Attention: []bool{true, true}, Depth: []int{1, 1}, MidDepth: 1, ContextDim: 64,
		Heads: []int{8, 8}, MidHeads: 8, Groups: 32,
	}
}

// tinyGen writes random tensors in the ldm layout for a Config, following
// the structure of ldm's UNetModel (as mkckpt does for the full model).
type tinyGen struct {
	src     tensor.MapSource
	rng     *rand.Rand
	half    bool // store weights as F16
	linProj bool // SD 2.x style linear proj_in/proj_out
}

func (g *tinyGen) put(name string, std, mean float64, shape ...int) {
	n := tensor.Numel(shape)
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(mean + std*g.rng.NormFloat64())
	}
	if g.half {
		h := make([]uint16, n)
		for i, f := range v {
			h[i] = tensor.F32ToF16(f)
		}
		g.src[Prefix+name] = tensor.FromHalf(h, tensor.F16, shape...)
		return
	}
	g.src[Prefix+name] = tensor.FromF32(v, shape...)
}

// weights are scaled like a trained network's (std ~ 1/sqrt(fan-in)) so that
// activations stay O(1) through the whole model.
func (g *tinyGen) linear(p string, in, out int, bias bool) {
	g.put(p+".weight", 1/math.Sqrt(float64(in)), 0, out, in)
	if bias {
		g.put(p+".bias", 0.1, 0, out)
	}
}

func (g *tinyGen) conv(p string, in, out, k int) {
	g.put(p+".weight", 1/math.Sqrt(float64(in*k*k)), 0, out, in, k, k)
	g.put(p+".bias", 0.1, 0, out)
}

func (g *tinyGen) norm(p string, c int) {
	g.put(p+".weight", 0.1, 1, c)
	g.put(p+".bias", 0.1, 0, c)
}

func (g *tinyGen) res(p string, in, out, emb int) {
	g.norm(p+".in_layers.0", in)
	g.conv(p+".in_layers.2", in, out, 3)
	g.linear(p+".emb_layers.1", emb, out, true)
	g.norm(p+".out_layers.0", out)
	g.conv(p+".out_layers.3", out, out, 3)
	if in != out {
		g.conv(p+".skip_connection", in, out, 1)
	}
}

func (g *tinyGen) transformer(p string, c, ctx, depth int) {
	g.norm(p+".norm", c)
	if g.linProj {
		g.linear(p+".proj_in", c, c, true)
		g.linear(p+".proj_out", c, c, true)
	} else {
		g.conv(p+".proj_in", c, c, 1)
		g.conv(p+".proj_out", c, c, 1)
	}
	for d := 0; d < depth; d++ {
		b := fmt.Sprintf("%s.transformer_blocks.%d", p, d)
		for _, a := range []string{".attn1", ".attn2"} {
			kv := c
			if a == ".attn2" {
				kv = ctx
			}
			g.linear(b+a+".to_q", c, c, false)
			g.linear(b+a+".to_k", kv, c, false)
			g.linear(b+a+".to_v", kv, c, false)
			g.linear(b+a+".to_out.0", c, c, true)
		}
		g.linear(b+".ff.net.0.proj", c, 8*c, true)
		g.linear(b+".ff.net.2", 4*c, c, true)
		g.norm(b+".norm1", c)
		g.norm(b+".norm2", c)
		g.norm(b+".norm3", c)
	}
}

// tinySource returns random weights for cfg under Prefix.
func tinySource(cfg *Config, seed uint64, half, linear bool) tensor.MapSource {
	g := &tinyGen{src: tensor.MapSource{}, rng: rand.New(rand.NewPCG(seed, 7)), half: half, linProj: linear}
	m, emb := cfg.ModelChannels, 4*cfg.ModelChannels
	g.linear("time_embed.0", m, emb, true)
	g.linear("time_embed.2", emb, emb, true)
	g.conv("input_blocks.0.0", cfg.InChannels, m, 3)
	chans := []int{m}
	ch, idx := m, 1
	for level, mult := range cfg.ChannelMult {
		for r := 0; r < cfg.NumResBlocks; r++ {
			g.res(fmt.Sprintf("input_blocks.%d.0", idx), ch, mult*m, emb)
			ch = mult * m
			if cfg.Attention[level] {
				g.transformer(fmt.Sprintf("input_blocks.%d.1", idx), ch, cfg.ContextDim, cfg.Depth[level])
			}
			chans = append(chans, ch)
			idx++
		}
		if level != len(cfg.ChannelMult)-1 {
			g.conv(fmt.Sprintf("input_blocks.%d.0.op", idx), ch, ch, 3)
			chans = append(chans, ch)
			idx++
		}
	}
	g.res("middle_block.0", ch, ch, emb)
	g.transformer("middle_block.1", ch, cfg.ContextDim, cfg.MidDepth)
	g.res("middle_block.2", ch, ch, emb)
	idx = 0
	for level := len(cfg.ChannelMult) - 1; level >= 0; level-- {
		for i := 0; i <= cfg.NumResBlocks; i++ {
			skip := chans[len(chans)-1]
			chans = chans[:len(chans)-1]
			out := cfg.ChannelMult[level] * m
			g.res(fmt.Sprintf("output_blocks.%d.0", idx), ch+skip, out, emb)
			ch = out
			layer := 1
			if cfg.Attention[level] {
				g.transformer(fmt.Sprintf("output_blocks.%d.1", idx), ch, cfg.ContextDim, cfg.Depth[level])
				layer = 2
			}
			if level > 0 && i == cfg.NumResBlocks {
				g.conv(fmt.Sprintf("output_blocks.%d.%d.conv", idx, layer), ch, ch, 3)
			}
			idx++
		}
	}
	g.norm("out.0", m)
	g.conv("out.2", m, cfg.OutChannels, 3)
	return g.src
}

// randTensor returns an f32 tensor of N(0, 1) values.
func randTensor(seed uint64, shape ...int) *tensor.Tensor {
	r := rand.New(rand.NewPCG(seed, 11))
	t := tensor.New(shape...)
	for i := range t.F32 {
		t.F32[i] = float32(r.NormFloat64())
	}
	return t
}
