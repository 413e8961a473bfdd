package ckpt

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/gosd/gosd/sd/tensor"
)

// ldm prefixes of the OpenCLIP text encoders.
const (
	PrefixOpenCLIPSD2  = "cond_stage_model.model."        // SD 2.x, ViT-H/14
	PrefixOpenCLIPSDXL = "conditioner.embedders.1.model." // SDXL, ViT-bigG/14
)

// OpenCLIP <-> transformers CLIPTextModel module names within a layer
// (after "transformer.resblocks.N." / "text_model.encoder.layers.N.").
var (
	openCLIPLayerLDM = map[string]string{"ln_1": "layer_norm1", "ln_2": "layer_norm2",
		"attn.out_proj": "self_attn.out_proj", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
	openCLIPLayerDiff = invert(openCLIPLayerLDM)
)

// openCLIPComponent returns the diffusers component and ldm prefix of the
// OpenCLIP text model an ldm name belongs to.
func (m *KeyMap) openCLIPComponent(ldm string) (comp, prefix string, ok bool) {
	switch {
	case strings.HasPrefix(ldm, PrefixOpenCLIPSD2):
		return "text_encoder", PrefixOpenCLIPSD2, true
	case strings.HasPrefix(ldm, PrefixOpenCLIPSDXL):
		return "text_encoder_2", PrefixOpenCLIPSDXL, true
	}
	return "", "", false
}

// openCLIPToDiff maps an OpenCLIP name (without prefix) to its diffusers
// name(s) under text_model. The fused attention projection
// attn.in_proj_weight [3C, C] (and in_proj_bias [3C]) is stored by
// diffusers as q_proj, k_proj and v_proj, in that order, each [C, C];
// text_projection [C, P] is stored transposed as text_projection.weight
// [P, C] (outside text_model). logit_scale has no counterpart.
func openCLIPToDiff(s string) (parts []string, transpose, ok bool) {
	switch {
	case s == "token_embedding.weight":
		return []string{"text_model.embeddings.token_embedding.weight"}, false, true
	case s == "positional_embedding":
		return []string{"text_model.embeddings.position_embedding.weight"}, false, true
	case strings.HasPrefix(s, "ln_final."):
		return []string{"text_model.final_layer_norm." + strings.TrimPrefix(s, "ln_final.")}, false, true
	case s == "text_projection":
		return []string{"text_projection.weight"}, true, true
	}
	rest, ok := strings.CutPrefix(s, "transformer.resblocks.")
	if !ok {
		return nil, false, false
	}
	n, rest := splitIndex(rest)
	if n < 0 {
		return nil, false, false
	}
	p := fmt.Sprintf("text_model.encoder.layers.%d.", n)
	switch rest {
	case "attn.in_proj_weight", "attn.in_proj_bias":
		suf := "weight"
		if rest == "attn.in_proj_bias" {
			suf = "bias"
		}
		return []string{p + "self_attn.q_proj." + suf, p + "self_attn.k_proj." + suf, p + "self_attn.v_proj." + suf}, false, true
	}
	d, ok := mapModule(rest, openCLIPLayerLDM)
	if !ok {
		return nil, false, false
	}
	return []string{p + d}, false, true
}

// openCLIPToLDM is the inverse of openCLIPToDiff for one diffusers name:
// q_proj, k_proj and v_proj all map to the fused in_proj name.
func openCLIPToLDM(s string) (string, bool) {
	switch {
	case s == "text_model.embeddings.token_embedding.weight":
		return "token_embedding.weight", true
	case s == "text_model.embeddings.position_embedding.weight":
		return "positional_embedding", true
	case strings.HasPrefix(s, "text_model.final_layer_norm."):
		return "ln_final." + strings.TrimPrefix(s, "text_model.final_layer_norm."), true
	case s == "text_projection.weight":
		return "text_projection", true
	}
	rest, ok := strings.CutPrefix(s, "text_model.encoder.layers.")
	if !ok {
		return "", false
	}
	n, rest := splitIndex(rest)
	if n < 0 {
		return "", false
	}
	p := fmt.Sprintf("transformer.resblocks.%d.", n)
	for _, proj := range []string{"q_proj", "k_proj", "v_proj"} {
		switch rest {
		case "self_attn." + proj + ".weight":
			return p + "attn.in_proj_weight", true
		case "self_attn." + proj + ".bias":
			return p + "attn.in_proj_bias", true
		}
	}
	l, ok := mapModule(rest, openCLIPLayerDiff)
	if !ok {
		return "", false
	}
	return p + l, true
}

// DiffusersParts returns the "<component>/<name>" tensors an ldm tensor is
// stored as in the diffusers layout: one name for most tensors, three
// (q, k, v, concatenated along the first dimension in the ldm tensor) for
// OpenCLIP's fused attention projections; transpose reports a 2-D tensor
// stored transposed (OpenCLIP's text_projection).
func (m *KeyMap) DiffusersParts(ldm string) (parts []string, transpose, ok bool) {
	if comp, prefix, ok := m.openCLIPComponent(ldm); ok {
		ps, tr, ok := openCLIPToDiff(strings.TrimPrefix(ldm, prefix))
		if !ok || (tr && comp != "text_encoder_2") {
			return nil, false, false // SD 2.x's diffusers text encoder has no projection
		}
		for i := range ps {
			ps[i] = comp + "/" + ps[i]
		}
		return ps, tr, true
	}
	d, ok := m.ToDiffusers(ldm)
	if !ok {
		return nil, false, false
	}
	return []string{d}, false, true
}

// IsComposite reports whether an ldm tensor is stored in the diffusers
// layout as several parts or transposed (see DiffusersParts).
func (m *KeyMap) IsComposite(ldm string) bool {
	parts, tr, ok := m.DiffusersParts(ldm)
	return ok && (len(parts) > 1 || tr)
}

// useConfigs tells the key map, from a diffusers folder's configs, whether
// its text_encoder is SD 2.x's OpenCLIP (a GELU CLIPTextModel, no
// text_encoder_2), which the names alone do not reveal.
func (m *KeyMap) useConfigs(configs map[string][]byte) {
	if _, xl := configs["text_encoder_2"]; xl {
		return
	}
	var te struct {
		Act string `json:"hidden_act"`
	}
	if json.Unmarshal(configs["text_encoder"], &te) == nil && te.Act == "gelu" {
		m.openCLIPText = true
	}
}

// joinParts builds an ldm tensor from its diffusers parts: rows
// concatenated, then transposed when transpose is set. Parts must share
// dtype and trailing dimensions.
func joinParts(name string, parts []*tensor.Tensor, transpose bool) (*tensor.Tensor, error) {
	t0 := parts[0]
	rows := 0
	for _, p := range parts {
		if p.DType != t0.DType || len(p.Shape) != len(t0.Shape) || len(p.Shape) == 0 || !tensor.SameShape(p.Shape[1:], t0.Shape[1:]) {
			return nil, fmt.Errorf("ckpt: %s: parts of shapes %s and %s cannot be joined", name,
				tensor.ShapeString(t0.Shape), tensor.ShapeString(p.Shape))
		}
		rows += p.Shape[0]
	}
	shape := append([]int{rows}, t0.Shape[1:]...)
	var out *tensor.Tensor
	if t0.DType == tensor.F32 {
		buf := make([]float32, 0, tensor.Numel(shape))
		for _, p := range parts {
			buf = append(buf, p.F32...)
		}
		out = tensor.FromF32(buf, shape...)
	} else {
		buf := make([]uint16, 0, tensor.Numel(shape))
		for _, p := range parts {
			buf = append(buf, p.Half...)
		}
		out = tensor.FromHalf(buf, t0.DType, shape...)
	}
	if transpose {
		if len(shape) != 2 {
			return nil, fmt.Errorf("ckpt: %s: cannot transpose shape %s", name, tensor.ShapeString(shape))
		}
		out = transpose2D(out)
	}
	return out, nil
}

// splitPart returns part i of n of an ldm tensor (rows i*R/n .. (i+1)*R/n,
// transposed first when transpose is set), the inverse of joinParts.
func splitPart(t *tensor.Tensor, i, n int, transpose bool) *tensor.Tensor {
	if transpose && len(t.Shape) == 2 {
		t = transpose2D(t)
	}
	r := t.Shape[0] / n
	inner := tensor.Numel(t.Shape[1:])
	shape := append([]int{r}, t.Shape[1:]...)
	if t.DType == tensor.F32 {
		return tensor.FromF32(t.F32[i*r*inner:(i+1)*r*inner], shape...)
	}
	return tensor.FromHalf(t.Half[i*r*inner:(i+1)*r*inner], t.DType, shape...)
}

// partShape is splitPart's result shape for a stored shape.
func partShape(shape []int, n int, transpose bool) []int {
	s := append([]int(nil), shape...)
	if transpose && len(s) == 2 {
		s[0], s[1] = s[1], s[0]
	}
	if len(s) > 0 {
		s[0] /= n
	}
	return s
}

// transpose2D transposes a 2-D tensor of any dtype into a new tensor.
func transpose2D(t *tensor.Tensor) *tensor.Tensor {
	r, c := t.Shape[0], t.Shape[1]
	if t.DType == tensor.F32 {
		out := make([]float32, r*c)
		for i := 0; i < r; i++ {
			for j := 0; j < c; j++ {
				out[j*r+i] = t.F32[i*c+j]
			}
		}
		return tensor.FromF32(out, c, r)
	}
	out := make([]uint16, r*c)
	for i := 0; i < r; i++ {
		for j := 0; j < c; j++ {
			out[j*r+i] = t.Half[i*c+j]
		}
	}
	return tensor.FromHalf(out, t.DType, c, r)
}
