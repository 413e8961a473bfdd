package ckpt

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/gosd/gosd/sd/tensor"
)

// Name prefixes of the original single-file (ldm) layout.
const (
	PrefixUNet = "model.diffusion_model."
	PrefixVAE  = "first_stage_model."
	PrefixCLIP = "cond_stage_model.transformer.text_model."
)

// KeyMap converts tensor names between the original single-file (ldm)
// layout and the diffusers folder layout. Diffusers names are written
// "<component>/<name>", e.g. "unet/down_blocks.0.resnets.1.conv1.weight",
// "vae/decoder.up_blocks.0.upsamplers.0.conv.bias",
// "text_encoder/text_model.final_layer_norm.weight".
//
// The map is derived from the block structure found in a set of names
// (resnets per UNet level, which UNet up levels have attention, how many
// VAE levels there are), so it serves any SD 1.x/2.x-style model size.
// Names without a counterpart (DDPM schedule buffers, EMA copies) do not map.
//
// The OpenCLIP text encoders (SD 2.x cond_stage_model.model.*, SDXL's
// conditioner.embedders.1.model.*) map to diffusers' text_encoder and
// text_encoder_2 CLIPTextModels; their fused attention projections and
// text_projection have no one-to-one counterpart: see DiffusersParts
// (ToDiffusers reports false for them, ToLDM maps each part to the fused
// name). SDXL's first text encoder lives under conditioner.embedders.0.
type KeyMap struct {
	// openCLIPText: the diffusers text_encoder is SD 2.x's OpenCLIP.
	openCLIPText bool
	unetLayers   int          // resnets per UNet down level (layers_per_block)
	upAttn       map[int]bool // diffusers up_blocks index -> has attentions
	vaeLevels    int          // number of VAE resolution levels
	clipLDM      string       // ldm prefix of the text model
}

// NewKeyMap derives a KeyMap from tensor names, either all in the ldm layout
// or all in the "<component>/<name>" diffusers form (a mix also works).
func NewKeyMap(names []string) (*KeyMap, error) {
	m := &KeyMap{upAttn: map[int]bool{}, clipLDM: PrefixCLIP}
	firstOp, maxIn, maxRes := -1, -1, -1
	for _, n := range names {
		switch {
		case strings.HasPrefix(n, PrefixUNet+"input_blocks."):
			idx, rest := splitIndex(strings.TrimPrefix(n, PrefixUNet+"input_blocks."))
			maxIn = max(maxIn, idx)
			if strings.HasPrefix(rest, "0.op.") && (firstOp < 0 || idx < firstOp) {
				firstOp = idx
			}
		case strings.HasPrefix(n, "unet/down_blocks.0.resnets."):
			j, _ := splitIndex(strings.TrimPrefix(n, "unet/down_blocks.0.resnets."))
			maxRes = max(maxRes, j)
		case strings.HasPrefix(n, "unet/up_blocks."):
			i, rest := splitIndex(strings.TrimPrefix(n, "unet/up_blocks."))
			if i >= 0 && strings.HasPrefix(rest, "attentions.") {
				m.upAttn[i] = true
			}
		case strings.HasPrefix(n, PrefixVAE+"decoder.up."):
			i, _ := splitIndex(strings.TrimPrefix(n, PrefixVAE+"decoder.up."))
			m.vaeLevels = max(m.vaeLevels, i+1)
		case strings.HasPrefix(n, "vae/decoder.up_blocks."):
			i, _ := splitIndex(strings.TrimPrefix(n, "vae/decoder.up_blocks."))
			m.vaeLevels = max(m.vaeLevels, i+1)
		case strings.HasPrefix(n, PrefixOpenCLIPSD2):
			m.openCLIPText = true
		case strings.HasPrefix(n, "conditioner.embedders.0.transformer.text_model."),
			strings.HasPrefix(n, "unet/add_embedding."), strings.HasPrefix(n, "text_encoder_2/"):
			// SDXL keeps its first text encoder under the conditioner.
			m.clipLDM = "conditioner.embedders.0.transformer.text_model."
		}
	}
	switch {
	case firstOp > 0:
		m.unetLayers = firstOp - 1
	case maxIn > 0: // a single level: no downsampler
		m.unetLayers = maxIn
	case maxRes >= 0:
		m.unetLayers = maxRes + 1
	}
	// ldm output blocks: a level has attention when its blocks carry a
	// module 1 that is not the upsampler. Record in diffusers numbering.
	if m.unetLayers > 0 {
		per := m.unetLayers + 1
		for _, n := range names {
			if !strings.HasPrefix(n, PrefixUNet+"output_blocks.") {
				continue
			}
			idx, rest := splitIndex(strings.TrimPrefix(n, PrefixUNet+"output_blocks."))
			if idx >= 0 && strings.HasPrefix(rest, "1.") && !strings.HasPrefix(rest, "1.conv.") {
				m.upAttn[idx/per] = true
			}
		}
	}
	hasUNet := false
	for _, n := range names {
		if strings.HasPrefix(n, PrefixUNet) || strings.HasPrefix(n, "unet/") {
			hasUNet = true
			break
		}
	}
	if hasUNet && m.unetLayers <= 0 {
		return nil, fmt.Errorf("ckpt: key map: cannot tell the UNet's resnets per level from its names")
	}
	return m, nil
}

// splitIndex parses "12.rest" into 12 and "rest" (-1 when there is no number).
func splitIndex(s string) (int, string) {
	num, rest, _ := strings.Cut(s, ".")
	v, err := strconv.Atoi(num)
	if err != nil || v < 0 {
		return -1, s
	}
	return v, rest
}

// Resnet submodule names: ldm <-> diffusers.
var (
	unetResLDM = map[string]string{"in_layers.0": "norm1", "in_layers.2": "conv1", "emb_layers.1": "time_emb_proj",
		"out_layers.0": "norm2", "out_layers.3": "conv2", "skip_connection": "conv_shortcut"}
	unetResDiff = invert(unetResLDM)
	vaeAttnLDM  = map[string]string{"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
	vaeAttnDiff = map[string]string{"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out",
		"query": "q", "key": "k", "value": "v", "proj_attn": "proj_out"}
	unetTopLDM = map[string]string{"time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
		"input_blocks.0.0": "conv_in", "out.0": "conv_norm_out", "out.2": "conv_out",
		"label_emb.0.0": "add_embedding.linear_1", "label_emb.0.2": "add_embedding.linear_2"}
	unetTopDiff = invert(unetTopLDM)
)

func invert(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[v] = k
	}
	return out
}

// mapModule maps the longest matching module prefix of s (a dotted name
// ending in a parameter) through table.
func mapModule(s string, table map[string]string) (string, bool) {
	for i := len(s); i > 0; i-- {
		if i < len(s) && s[i] != '.' {
			continue
		}
		if v, ok := table[s[:i]]; ok {
			return v + s[i:], true
		}
	}
	return "", false
}

// ToDiffusers maps an ldm name to its "<component>/<name>" diffusers form.
func (m *KeyMap) ToDiffusers(name string) (string, bool) {
	switch {
	case strings.HasPrefix(name, PrefixUNet):
		d, ok := m.unetToDiff(strings.TrimPrefix(name, PrefixUNet))
		return "unet/" + d, ok
	case strings.HasPrefix(name, PrefixVAE):
		d, ok := m.vaeToDiff(strings.TrimPrefix(name, PrefixVAE))
		return "vae/" + d, ok
	case strings.HasPrefix(name, m.clipLDM):
		return "text_encoder/text_model." + strings.TrimPrefix(name, m.clipLDM), true
	}
	if comp, prefix, ok := m.openCLIPComponent(name); ok {
		parts, tr, ok := openCLIPToDiff(strings.TrimPrefix(name, prefix))
		if !ok || len(parts) != 1 || tr {
			return "", false
		}
		return comp + "/" + parts[0], true
	}
	return "", false
}

// ToLDM maps a "<component>/<name>" diffusers name to the ldm layout.
func (m *KeyMap) ToLDM(name string) (string, bool) {
	comp, rest, ok := strings.Cut(name, "/")
	if !ok {
		return "", false
	}
	switch comp {
	case "unet":
		l, ok := m.unetToLDM(rest)
		return PrefixUNet + l, ok
	case "vae":
		l, ok := m.vaeToLDM(rest)
		return PrefixVAE + l, ok
	case "text_encoder":
		if m.openCLIPText {
			l, ok := openCLIPToLDM(rest)
			if !ok || l == "text_projection" {
				return "", false
			}
			return PrefixOpenCLIPSD2 + l, true
		}
		if !strings.HasPrefix(rest, "text_model.") {
			return "", false
		}
		return m.clipLDM + strings.TrimPrefix(rest, "text_model."), true
	case "text_encoder_2":
		l, ok := openCLIPToLDM(rest)
		return PrefixOpenCLIPSDXL + l, ok
	}
	return "", false
}

func (m *KeyMap) unetToDiff(s string) (string, bool) {
	if d, ok := mapModule(s, unetTopLDM); ok {
		return d, true
	}
	per := m.unetLayers + 1
	if rest, ok := strings.CutPrefix(s, "input_blocks."); ok {
		n, rest := splitIndex(rest)
		if n < 1 || m.unetLayers <= 0 {
			return "", false
		}
		level, j := (n-1)/per, (n-1)%per
		sub, rest := splitIndex(rest)
		switch {
		case j == m.unetLayers && sub == 0 && strings.HasPrefix(rest, "op."):
			return fmt.Sprintf("down_blocks.%d.downsamplers.0.conv.%s", level, strings.TrimPrefix(rest, "op.")), true
		case j < m.unetLayers && sub == 0:
			r, ok := mapModule(rest, unetResLDM)
			return fmt.Sprintf("down_blocks.%d.resnets.%d.%s", level, j, r), ok
		case j < m.unetLayers && sub == 1:
			return fmt.Sprintf("down_blocks.%d.attentions.%d.%s", level, j, rest), true
		}
		return "", false
	}
	if rest, ok := strings.CutPrefix(s, "middle_block."); ok {
		sub, rest := splitIndex(rest)
		switch sub {
		case 0, 2:
			r, ok := mapModule(rest, unetResLDM)
			return fmt.Sprintf("mid_block.resnets.%d.%s", sub/2, r), ok
		case 1:
			return "mid_block.attentions.0." + rest, true
		}
		return "", false
	}
	if rest, ok := strings.CutPrefix(s, "output_blocks."); ok {
		n, rest := splitIndex(rest)
		if n < 0 || m.unetLayers <= 0 {
			return "", false
		}
		level, j := n/per, n%per
		sub, rest := splitIndex(rest)
		switch {
		case sub == 0:
			r, ok := mapModule(rest, unetResLDM)
			return fmt.Sprintf("up_blocks.%d.resnets.%d.%s", level, j, r), ok
		case (sub == 1 || sub == 2) && strings.HasPrefix(rest, "conv."):
			return fmt.Sprintf("up_blocks.%d.upsamplers.0.%s", level, rest), j == m.unetLayers
		case sub == 1:
			return fmt.Sprintf("up_blocks.%d.attentions.%d.%s", level, j, rest), true
		}
	}
	return "", false
}

func (m *KeyMap) unetToLDM(s string) (string, bool) {
	if l, ok := mapModule(s, unetTopDiff); ok {
		return l, true
	}
	per := m.unetLayers + 1
	if rest, ok := strings.CutPrefix(s, "down_blocks."); ok {
		level, rest := splitIndex(rest)
		if level < 0 {
			return "", false
		}
		switch {
		case strings.HasPrefix(rest, "resnets."):
			j, r := splitIndex(strings.TrimPrefix(rest, "resnets."))
			r, ok := mapModule(r, unetResDiff)
			return fmt.Sprintf("input_blocks.%d.0.%s", 1+level*per+j, r), ok && j >= 0
		case strings.HasPrefix(rest, "attentions."):
			j, r := splitIndex(strings.TrimPrefix(rest, "attentions."))
			return fmt.Sprintf("input_blocks.%d.1.%s", 1+level*per+j, r), j >= 0
		case strings.HasPrefix(rest, "downsamplers.0.conv."):
			return fmt.Sprintf("input_blocks.%d.0.op.%s", 1+level*per+m.unetLayers,
				strings.TrimPrefix(rest, "downsamplers.0.conv.")), true
		}
		return "", false
	}
	if rest, ok := strings.CutPrefix(s, "mid_block."); ok {
		switch {
		case strings.HasPrefix(rest, "resnets."):
			j, r := splitIndex(strings.TrimPrefix(rest, "resnets."))
			r, ok := mapModule(r, unetResDiff)
			return fmt.Sprintf("middle_block.%d.%s", 2*j, r), ok && (j == 0 || j == 1)
		case strings.HasPrefix(rest, "attentions.0."):
			return "middle_block.1." + strings.TrimPrefix(rest, "attentions.0."), true
		}
		return "", false
	}
	if rest, ok := strings.CutPrefix(s, "up_blocks."); ok {
		level, rest := splitIndex(rest)
		if level < 0 {
			return "", false
		}
		switch {
		case strings.HasPrefix(rest, "resnets."):
			j, r := splitIndex(strings.TrimPrefix(rest, "resnets."))
			r, ok := mapModule(r, unetResDiff)
			return fmt.Sprintf("output_blocks.%d.0.%s", level*per+j, r), ok && j >= 0
		case strings.HasPrefix(rest, "attentions."):
			j, r := splitIndex(strings.TrimPrefix(rest, "attentions."))
			return fmt.Sprintf("output_blocks.%d.1.%s", level*per+j, r), j >= 0
		case strings.HasPrefix(rest, "upsamplers.0.conv."):
			sub := 1
			if m.upAttn[level] {
				sub = 2
			}
			return fmt.Sprintf("output_blocks.%d.%d.%s", level*per+m.unetLayers, sub,
				strings.TrimPrefix(rest, "upsamplers.0.")), true
		}
	}
	return "", false
}

func (m *KeyMap) vaeToDiff(s string) (string, bool) {
	coder, rest, ok := strings.Cut(s, ".")
	if !ok {
		return "", false
	}
	if coder == "quant_conv" || coder == "post_quant_conv" {
		return s, true
	}
	if coder != "encoder" && coder != "decoder" {
		return "", false
	}
	out, ok := m.vaeCoderToDiff(coder, rest)
	return coder + "." + out, ok
}

func (m *KeyMap) vaeCoderToDiff(coder, s string) (string, bool) {
	switch {
	case strings.HasPrefix(s, "conv_in.") || strings.HasPrefix(s, "conv_out."):
		return s, true
	case strings.HasPrefix(s, "norm_out."):
		return "conv_norm_out." + strings.TrimPrefix(s, "norm_out."), true
	case strings.HasPrefix(s, "mid.block_1."):
		return "mid_block.resnets.0." + vaeResToDiff(strings.TrimPrefix(s, "mid.block_1.")), true
	case strings.HasPrefix(s, "mid.block_2."):
		return "mid_block.resnets.1." + vaeResToDiff(strings.TrimPrefix(s, "mid.block_2.")), true
	case strings.HasPrefix(s, "mid.attn_1."):
		r, ok := mapModule(strings.TrimPrefix(s, "mid.attn_1."), vaeAttnLDM)
		return "mid_block.attentions.0." + r, ok
	}
	kind := "down"
	if coder == "decoder" {
		kind = "up"
	}
	rest, ok := strings.CutPrefix(s, kind+".")
	if !ok {
		return "", false
	}
	i, rest := splitIndex(rest)
	if i < 0 {
		return "", false
	}
	if coder == "decoder" {
		if i >= m.vaeLevels {
			return "", false
		}
		i = m.vaeLevels - 1 - i
	}
	switch {
	case strings.HasPrefix(rest, "block."):
		j, r := splitIndex(strings.TrimPrefix(rest, "block."))
		return fmt.Sprintf("%s_blocks.%d.resnets.%d.%s", kind, i, j, vaeResToDiff(r)), j >= 0
	case strings.HasPrefix(rest, kind+"sample.conv."):
		return fmt.Sprintf("%s_blocks.%d.%ssamplers.0.conv.%s", kind, i, kind, strings.TrimPrefix(rest, kind+"sample.conv.")), true
	}
	return "", false
}

func vaeResToDiff(s string) string {
	if r, ok := strings.CutPrefix(s, "nin_shortcut."); ok {
		return "conv_shortcut." + r
	}
	return s
}

func vaeResToLDM(s string) string {
	if r, ok := strings.CutPrefix(s, "conv_shortcut."); ok {
		return "nin_shortcut." + r
	}
	return s
}

func (m *KeyMap) vaeToLDM(s string) (string, bool) {
	coder, rest, ok := strings.Cut(s, ".")
	if !ok {
		return "", false
	}
	if coder == "quant_conv" || coder == "post_quant_conv" {
		return s, true
	}
	if coder != "encoder" && coder != "decoder" {
		return "", false
	}
	out, ok := m.vaeCoderToLDM(coder, rest)
	return coder + "." + out, ok
}

func (m *KeyMap) vaeCoderToLDM(coder, s string) (string, bool) {
	switch {
	case strings.HasPrefix(s, "conv_in.") || strings.HasPrefix(s, "conv_out."):
		return s, true
	case strings.HasPrefix(s, "conv_norm_out."):
		return "norm_out." + strings.TrimPrefix(s, "conv_norm_out."), true
	case strings.HasPrefix(s, "mid_block.resnets.0."):
		return "mid.block_1." + vaeResToLDM(strings.TrimPrefix(s, "mid_block.resnets.0.")), true
	case strings.HasPrefix(s, "mid_block.resnets.1."):
		return "mid.block_2." + vaeResToLDM(strings.TrimPrefix(s, "mid_block.resnets.1.")), true
	case strings.HasPrefix(s, "mid_block.attentions.0."):
		r, ok := mapModule(strings.TrimPrefix(s, "mid_block.attentions.0."), vaeAttnDiff)
		return "mid.attn_1." + r, ok
	}
	kind := "down"
	if coder == "decoder" {
		kind = "up"
	}
	rest, ok := strings.CutPrefix(s, kind+"_blocks.")
	if !ok {
		return "", false
	}
	i, rest := splitIndex(rest)
	if i < 0 {
		return "", false
	}
	if coder == "decoder" {
		if i >= m.vaeLevels {
			return "", false
		}
		i = m.vaeLevels - 1 - i
	}
	switch {
	case strings.HasPrefix(rest, "resnets."):
		j, r := splitIndex(strings.TrimPrefix(rest, "resnets."))
		return fmt.Sprintf("%s.%d.block.%d.%s", kind, i, j, vaeResToLDM(r)), j >= 0
	case strings.HasPrefix(rest, kind+"samplers.0.conv."):
		return fmt.Sprintf("%s.%d.%ssample.conv.%s", kind, i, kind, strings.TrimPrefix(rest, kind+"samplers.0.conv.")), true
	}
	return "", false
}

// isVAEAttnMatrix reports whether an ldm name is a VAE mid-attention q/k/v/
// proj_out weight, stored as a 1x1 convolution [C, C, 1, 1] in ldm files and
// as a linear [C, C] in diffusers files.
func isVAEAttnMatrix(ldm string) bool {
	if !strings.HasPrefix(ldm, PrefixVAE) || !strings.Contains(ldm, ".mid.attn_1.") {
		return false
	}
	for _, s := range []string{".q.weight", ".k.weight", ".v.weight", ".proj_out.weight"} {
		if strings.HasSuffix(ldm, s) {
			return true
		}
	}
	return false
}

// toLDMShape reshapes a diffusers tensor to its ldm shape (VAE attention
// linear [C, C] -> conv [C, C, 1, 1]); other tensors are returned as is.
func toLDMShape(ldm string, t *tensor.Tensor) *tensor.Tensor {
	if isVAEAttnMatrix(ldm) && len(t.Shape) == 2 {
		return t.Reshape(t.Shape[0], t.Shape[1], 1, 1)
	}
	return t
}

// toDiffusersShape is the inverse of toLDMShape.
func toDiffusersShape(ldm string, t *tensor.Tensor) *tensor.Tensor {
	if isVAEAttnMatrix(ldm) && len(t.Shape) == 4 {
		return t.Reshape(t.Shape[0], t.Shape[1])
	}
	return t
}
