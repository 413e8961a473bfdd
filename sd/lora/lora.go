// Package lora reads LoRA files (kohya/AUTOMATIC1111 and diffusers/PEFT
// naming, for the UNet and the CLIP text encoder, including LoCon
// convolution LoRAs) and merges them into a model's weights.
//
// A LoRA module adds scale·up·down to one weight W of the model, with
// scale = alpha/rank · strength (alpha defaults to the rank). Linear:
// down [r, in], up [out, r]. Convolution (LoCon): down [r, in, kh, kw],
// up [out, r, 1, 1]; the product is reshaped to [out, in, kh, kw].
//
// Module names are mapped to the model's original (ldm) weight names
// through the ckpt key map (diffusers <-> ldm): kohya names are diffusers
// (or ldm) module paths with "_" for ".", prefixed "lora_unet_", "lora_te_"
// (SD 1.x CLIP, SD 2.x OpenCLIP) or, for SDXL, "lora_te1_" (CLIP ViT-L)
// and "lora_te2_" (OpenCLIP bigG); diffusers names are "unet.<module>",
// "text_encoder.<module>" or "text_encoder_2.<module>".
//
// OpenCLIP keeps q, k and v fused in attn.in_proj_weight [3C, C] (rows
// 0..C-1 q, C..2C-1 k, 2C..3C-1 v); a q_proj, k_proj or v_proj module is
// merged into its row slice only (see ckpt.KeyMap.DiffusersParts).
package lora

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// Module is one low-rank update in a LoRA file.
type Module struct {
	Key      string         // module name as stored, e.g. "lora_unet_mid_block_attentions_0_proj_in"
	Down, Up *tensor.Tensor // f32; down [r, in(, kh, kw)], up [out, r(, 1, 1)]
	Alpha    float64        // alpha; equals the rank when the file has none
	TE       bool           // a text-encoder module (else UNet)
}

// Rank is the module's rank r.
func (m *Module) Rank() int { return m.Down.Shape[0] }

// File is a loaded LoRA file.
type File struct {
	Name    string    // file name without extension, as prompts refer to it
	Path    string    // the file read
	Modules []*Module // sorted by Key
	// Unsupported lists tensor names that are not plain LoRA/LoCon parts
	// (LoHa, LoKr, lora_mid, DoRA scales, unknown suffixes) or that lack
	// their up or down half; Apply reports them as unmatched.
	Unsupported []string
}

// suffixes of the down/up/alpha tensors, longest first.
var (
	downSuffixes = []string{".lora_linear_layer.down.weight", ".lora_A.default.weight", ".lora_down.weight",
		".lora.down.weight", ".lora_A.weight", ".down.weight"}
	upSuffixes = []string{".lora_linear_layer.up.weight", ".lora_B.default.weight", ".lora_up.weight",
		".lora.up.weight", ".lora_B.weight", ".up.weight"}
)

func cutAny(name string, sfx []string) (string, bool) {
	for _, s := range sfx {
		if m, ok := strings.CutSuffix(name, s); ok {
			return m, true
		}
	}
	return "", false
}

// Load reads a LoRA file (.safetensors, or a PyTorch .pt/.ckpt/.bin zip).
// Tensors are copied to f32, so the file is closed on return.
func Load(path string) (*File, error) {
	c, err := ckpt.Open(path, ckpt.Options{})
	if err != nil {
		return nil, fmt.Errorf("lora %s: %w", path, err)
	}
	defer c.Close()
	base := filepath.Base(path)
	f := &File{Name: strings.TrimSuffix(base, filepath.Ext(base)), Path: path}
	type parts struct{ down, up, alpha string }
	mods := map[string]*parts{}
	get := func(k string) *parts {
		if mods[k] == nil {
			mods[k] = &parts{}
		}
		return mods[k]
	}
	for _, n := range c.Names() {
		if m, ok := cutAny(n, downSuffixes); ok {
			get(m).down = n
		} else if m, ok := cutAny(n, upSuffixes); ok {
			get(m).up = n
		} else if m, ok := strings.CutSuffix(n, ".alpha"); ok {
			get(m).alpha = n
		} else {
			f.Unsupported = append(f.Unsupported, n)
		}
	}
	// A module with a Tucker core (lora_mid) or a DoRA magnitude is not a
	// plain up·down update: leave all of it out rather than merge it wrong.
	special := map[string]bool{}
	for _, n := range f.Unsupported {
		for _, sfx := range []string{".lora_mid.weight", ".dora_scale"} {
			if m, ok := strings.CutSuffix(n, sfx); ok {
				special[m] = true
			}
		}
	}
	for key, p := range mods {
		if p.down == "" || p.up == "" || special[key] {
			for _, n := range []string{p.down, p.up, p.alpha} {
				if n != "" {
					f.Unsupported = append(f.Unsupported, n)
				}
			}
			continue
		}
		down, ok1 := c.Get(p.down)
		up, ok2 := c.Get(p.up)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("lora %s: module %s cannot be read", path, key)
		}
		m := &Module{Key: key, Down: down.ToF32().Clone(), Up: up.ToF32().Clone()}
		if err := m.check(); err != nil {
			return nil, fmt.Errorf("lora %s: %w", path, err)
		}
		m.Alpha = float64(m.Rank())
		if p.alpha != "" {
			a, ok := c.Get(p.alpha)
			if !ok || a.Numel() != 1 {
				return nil, fmt.Errorf("lora %s: %s is not a scalar", path, p.alpha)
			}
			m.Alpha = float64(a.Float32s()[0])
		}
		f.Modules = append(f.Modules, m)
	}
	sort.Slice(f.Modules, func(i, j int) bool { return f.Modules[i].Key < f.Modules[j].Key })
	sort.Strings(f.Unsupported)
	if len(f.Modules) == 0 {
		return nil, fmt.Errorf("lora %s: no LoRA modules found (%d tensors, none named *.lora_down/lora_up, *.lora_A/lora_B)", path, len(c.Names()))
	}
	return f, nil
}

// check validates a module's shapes: down [r, in, ...], up [out, r, 1...].
func (m *Module) check() error {
	d, u := m.Down.Shape, m.Up.Shape
	if (len(d) != 2 && len(d) != 4) || (len(u) != 2 && len(u) != 4) || d[0] < 1 {
		return fmt.Errorf("module %s: down %s / up %s are not linear or conv LoRA shapes",
			m.Key, tensor.ShapeString(d), tensor.ShapeString(u))
	}
	if u[1] != d[0] || (len(u) == 4 && (u[2] != 1 || u[3] != 1)) {
		return fmt.Errorf("module %s: up %s does not fit down %s (want up [out, %d(, 1, 1)])",
			m.Key, tensor.ShapeString(u), tensor.ShapeString(d), d[0])
	}
	return nil
}

// Find returns the LoRA file for a prompt's name in dir: dir/name with
// .safetensors, .pt or .ckpt, else the first such file of that name in a
// subfolder (in lexical order).
func Find(dir, name string) (string, error) {
	if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
		return "", fmt.Errorf("lora: %q is not a valid LoRA name", name)
	}
	exts := []string{".safetensors", ".pt", ".ckpt"}
	for _, e := range exts {
		p := filepath.Join(dir, name+e)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	var found string
	errStop := errors.New("stop")
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		base := d.Name()
		for _, e := range exts {
			if base == name+e {
				found = p
				return errStop
			}
		}
		return nil
	})
	if found != "" {
		return found, nil
	}
	if err != nil && !errors.Is(err, errStop) {
		return "", fmt.Errorf("lora: %w", err)
	}
	return "", fmt.Errorf("lora: no %s.safetensors, .pt or .ckpt in %s", name, dir)
}

// Library loads LoRA files by name from a folder and keeps them.
type Library struct {
	Dir   string
	mu    sync.Mutex
	files map[string]*File
}

// Get returns the named LoRA (see Find), loading it on first use.
func (l *Library) Get(name string) (*File, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f, ok := l.files[name]; ok {
		return f, nil
	}
	if l.Dir == "" {
		return nil, fmt.Errorf("lora: prompt asks for %q but no LoRA folder was given (--lora-dir)", name)
	}
	p, err := Find(l.Dir, name)
	if err != nil {
		return nil, err
	}
	f, err := Load(p)
	if err != nil {
		return nil, err
	}
	if l.files == nil {
		l.files = map[string]*File{}
	}
	l.files[name] = f
	return f, nil
}

// Loaded is a LoRA with the strengths to merge it at.
type Loaded struct {
	File *File
	TE   float64 // text-encoder strength
	UNet float64 // UNet strength
}

// Match is a LoRA module merged into a model weight.
type Match struct {
	File   string  // LoRA name
	Key    string  // module key in the file
	Target string  // ldm weight name
	Scale  float64 // alpha/rank · strength
	// Part and Parts: the module updates rows [Part·R/Parts, (Part+1)·R/Parts)
	// of the R-row Target (OpenCLIP's fused q/k/v: Parts 3); Parts is 1
	// for a whole weight.
	Part, Parts int
}

// Unmatched is a LoRA tensor or module that was not applied.
type Unmatched struct {
	File   string
	Key    string
	Reason string
}

// Report says what Apply did.
type Report struct {
	Matched   []Match
	Unmatched []Unmatched
}

// Target is the model weight (or row slice of one) a LoRA module updates.
type Target struct {
	LDM string // ldm weight name
	// Part and Parts: rows [Part·R/Parts, (Part+1)·R/Parts) of the R-row
	// weight (OpenCLIP's fused q/k/v); Parts is 1 for the whole weight.
	Part, Parts int
}

// Targets maps LoRA module names to the ldm weight names of a model.
type Targets struct {
	km    *ckpt.KeyMap
	kohya map[string]Target // kohya name -> target (LDM "" when ambiguous)
	names map[string]bool
}

// kohyaPrefixes are the ldm prefixes of the LoRA-able networks, the kohya
// prefix of their modules and the part of the ldm name kept in ldm-style
// kohya names.
var kohyaPrefixes = []struct{ ldm, kohya, strip string }{
	{ckpt.PrefixUNet, "lora_unet_", ckpt.PrefixUNet},
	{"cond_stage_model.transformer.", "lora_te_", "cond_stage_model.transformer."},
	{ckpt.PrefixOpenCLIPSD2, "lora_te_", ckpt.PrefixOpenCLIPSD2},
	{"conditioner.embedders.0.transformer.", "lora_te1_", "conditioner.embedders.0.transformer."},
	{ckpt.PrefixOpenCLIPSDXL, "lora_te2_", ckpt.PrefixOpenCLIPSDXL},
}

// NewTargets indexes the LoRA-able weights of src (2-D linear and 4-D
// convolution weights of the UNet and the text model(s), ldm names,
// including OpenCLIP's fused attn.in_proj_weight).
func NewTargets(src tensor.Source) (*Targets, error) {
	names := src.Names()
	km, err := ckpt.NewKeyMap(names)
	if err != nil {
		return nil, fmt.Errorf("lora: %w", err)
	}
	t := &Targets{km: km, kohya: map[string]Target{}, names: map[string]bool{}}
	add := func(k string, tg Target) {
		if prev, ok := t.kohya[k]; ok && prev != tg {
			t.kohya[k] = Target{}
			return
		}
		t.kohya[k] = tg
	}
	for _, n := range names {
		mod, ok := strings.CutSuffix(n, ".weight")
		if !ok {
			if mod, ok = strings.CutSuffix(n, ".in_proj_weight"); !ok {
				continue
			}
			mod += ".in_proj"
		}
		var prefix, ldmRel string
		for _, p := range kohyaPrefixes {
			if strings.HasPrefix(n, p.ldm) {
				prefix, ldmRel = p.kohya, strings.TrimPrefix(mod, p.strip)
				break
			}
		}
		if prefix == "" {
			continue
		}
		t.names[n] = true
		add(prefix+strings.ReplaceAll(ldmRel, ".", "_"), Target{n, 0, 1})
		parts, tr, ok := km.DiffusersParts(n)
		if !ok || tr {
			continue
		}
		for i, d := range parts {
			_, dmod, _ := strings.Cut(strings.TrimSuffix(d, ".weight"), "/")
			add(prefix+strings.ReplaceAll(dmod, ".", "_"), Target{n, i, len(parts)})
		}
	}
	return t, nil
}

// processor-style (older diffusers attention processor) projections.
var (
	unetProc = map[string]string{"to_q_lora": "to_q", "to_k_lora": "to_k", "to_v_lora": "to_v", "to_out_lora": "to_out.0"}
	teProc   = map[string]string{"to_q_lora": "q_proj", "to_k_lora": "k_proj", "to_v_lora": "v_proj", "to_out_lora": "out_proj"}
)

// Resolve maps a LoRA module key to an ldm weight name; te reports a
// text-encoder module. For a q/k/v module of OpenCLIP the name is the fused
// in_proj weight; ResolveTarget tells which rows.
func (t *Targets) Resolve(key string) (ldm string, te bool, ok bool) {
	tg, te, ok := t.ResolveTarget(key)
	return tg.LDM, te, ok
}

// ResolveTarget maps a LoRA module key to the weight (or row slice) it
// updates; te reports a text-encoder module.
func (t *Targets) ResolveTarget(key string) (tg Target, te bool, ok bool) {
	for _, p := range []string{"lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"} {
		if strings.HasPrefix(key, p) {
			tg, ok = t.kohya[key]
			return tg, p != "lora_unet_", ok && tg.LDM != ""
		}
	}
	k := strings.TrimPrefix(key, "base_model.model.")
	comp := ""
	switch {
	case strings.HasPrefix(k, "unet."):
		comp, k = "unet", strings.TrimPrefix(k, "unet.")
	case strings.HasPrefix(k, "text_encoder_2."):
		comp, k = "text_encoder_2", strings.TrimPrefix(k, "text_encoder_2.")
	case strings.HasPrefix(k, "text_encoder."):
		comp, k = "text_encoder", strings.TrimPrefix(k, "text_encoder.")
	case strings.HasPrefix(k, "text_model."):
		comp = "text_encoder"
	case strings.HasPrefix(k, "down_blocks.") || strings.HasPrefix(k, "mid_block.") || strings.HasPrefix(k, "up_blocks.") ||
		strings.HasPrefix(k, "conv_in") || strings.HasPrefix(k, "conv_out") || strings.HasPrefix(k, "time_embedding."):
		comp = "unet"
	default:
		return Target{}, false, false
	}
	// ".processor.to_q_lora" (UNet) and ".to_q_lora" (text encoder) forms.
	table := unetProc
	if comp != "unet" {
		table = teProc
	}
	if i := strings.LastIndex(k, "."); i >= 0 {
		if p, ok := table[k[i+1:]]; ok {
			k = strings.TrimSuffix(k[:i], ".processor") + "." + p
		}
	}
	d := comp + "/" + k + ".weight"
	ldm, ok := t.km.ToLDM(d)
	if !ok || !t.names[ldm] {
		return Target{}, false, false
	}
	tg = Target{ldm, 0, 1}
	if parts, tr, ok := t.km.DiffusersParts(ldm); ok && !tr && len(parts) > 1 {
		tg.Parts = len(parts)
		tg.Part = -1
		for i, p := range parts {
			if p == d {
				tg.Part = i
			}
		}
		if tg.Part < 0 {
			return Target{}, false, false
		}
	}
	return tg, comp != "unet", true
}

// Apply merges loras into the weights of src (ldm names) and returns a
// Source that yields merged f32 copies of the affected weights and src's
// own tensors otherwise. Several LoRAs may touch one weight; their updates
// add up, each at its own strength (TE for text-encoder modules, UNet for
// UNet modules). Modules that map to no weight of src are listed in the
// report, not errors; a module whose shape does not fit its weight is an
// error naming both.
func Apply(src tensor.Source, loras []Loaded) (tensor.Source, Report, error) {
	return ApplyWith(nil, src, loras)
}

// ApplyWith is Apply computing the up·down products with be.MatMul (the
// native CPU kernels are several times faster than the pure-Go default);
// a nil be uses gonum's blas32.
func ApplyWith(be tensor.Backend, src tensor.Source, loras []Loaded) (tensor.Source, Report, error) {
	return ApplyOptions(src, loras, Options{Backend: be})
}

// Options tune ApplyOptions.
type Options struct {
	// Backend computes the up·down products (nil: gonum's blas32).
	Backend tensor.Backend
	// KeepDType stores each merged weight in its original dtype (rounded
	// to nearest even from the f32 sum) instead of f32, as A1111 merges
	// into fp16 weights; it halves the memory of f16/bf16 models' merged
	// copies (about 0.7 GB instead of 1.4 GB for a LoRA on every SD 1.5
	// attention and MLP layer).
	KeepDType bool
}

// ApplyOptions is Apply with Options.
func ApplyOptions(src tensor.Source, loras []Loaded, opts Options) (tensor.Source, Report, error) {
	be := opts.Backend
	var rep Report
	if len(loras) == 0 {
		return src, rep, nil
	}
	t, err := NewTargets(src)
	if err != nil {
		return nil, rep, err
	}
	merged := map[string]*tensor.Tensor{}
	for _, l := range loras {
		if l.File == nil {
			return nil, rep, errors.New("lora: Apply given a nil File")
		}
		for _, n := range l.File.Unsupported {
			rep.Unmatched = append(rep.Unmatched, Unmatched{l.File.Name, n, "not a LoRA down/up/alpha tensor of a complete module (LoHa, LoKr, lora_mid and DoRA are not supported)"})
		}
		for _, m := range l.File.Modules {
			tg, te, ok := t.ResolveTarget(m.Key)
			target := tg.LDM
			if !ok {
				rep.Unmatched = append(rep.Unmatched, Unmatched{l.File.Name, m.Key, "no such module in the model"})
				continue
			}
			strength := l.UNet
			if te {
				strength = l.TE
			}
			scale := m.Alpha / float64(m.Rank()) * strength
			rep.Matched = append(rep.Matched, Match{l.File.Name, m.Key, target, scale, tg.Part, tg.Parts})
			w, ok := merged[target]
			if !ok {
				orig, ok := src.Get(target)
				if !ok {
					return nil, rep, fmt.Errorf("lora: model weight %s cannot be read", target)
				}
				w = orig.ToF32()
				if w == orig {
					w = orig.Clone()
				}
			}
			if err := addDeltaPart(be, w, m, float32(scale), tg.Part, tg.Parts); err != nil {
				return nil, rep, fmt.Errorf("lora %s: %w", l.File.Path, err)
			}
			merged[target] = w
		}
	}
	if opts.KeepDType {
		for name, w := range merged {
			orig, _ := src.Get(name)
			if orig.DType == tensor.F32 {
				continue
			}
			h := make([]uint16, len(w.F32))
			for i, v := range w.F32 {
				if orig.DType == tensor.F16 {
					h[i] = tensor.F32ToF16(v)
				} else {
					h[i] = tensor.F32ToBF16(v)
				}
			}
			merged[name] = tensor.FromHalf(h, orig.DType, w.Shape...)
		}
	}
	return &Merged{src: src, merged: merged}, rep, nil
}

// addDeltaPart adds scale·up·down to rows [part·R/parts, (part+1)·R/parts)
// of the R-row w (f32, modified in place); parts <= 1 is the whole of w.
func addDeltaPart(be tensor.Backend, w *tensor.Tensor, m *Module, scale float32, part, parts int) error {
	if parts <= 1 {
		return addDelta(be, w, m, scale)
	}
	if len(w.Shape) == 0 || w.Shape[0]%parts != 0 || part < 0 || part >= parts {
		return fmt.Errorf("module %s: weight %s cannot be split into %d row parts", m.Key, tensor.ShapeString(w.Shape), parts)
	}
	r := w.Shape[0] / parts
	inner := tensor.Numel(w.Shape[1:])
	shape := append([]int{r}, w.Shape[1:]...)
	view := tensor.FromF32(w.F32[part*r*inner:(part+1)*r*inner], shape...)
	if err := addDelta(be, view, m, scale); err != nil {
		return fmt.Errorf("%w (part %d of %d of the fused weight)", err, part+1, parts)
	}
	return nil
}

// addDelta adds scale·up·down to w (f32, modified in place).
func addDelta(be tensor.Backend, w *tensor.Tensor, m *Module, scale float32) error {
	out, r := m.Up.Shape[0], m.Rank()
	cols := m.Down.Numel() / r
	if w.Shape[0] != out || w.Numel() != out*cols || (len(m.Down.Shape) == 4 && len(w.Shape) == 4 &&
		(m.Down.Shape[2] != w.Shape[2] || m.Down.Shape[3] != w.Shape[3])) {
		return fmt.Errorf("module %s: up %s · down %s does not fit weight %s",
			m.Key, tensor.ShapeString(m.Up.Shape), tensor.ShapeString(m.Down.Shape), tensor.ShapeString(w.Shape))
	}
	if scale == 0 {
		return nil
	}
	if be != nil {
		y := tensor.New(out, cols)
		if err := be.MatMul(y, m.Up.Reshape(out, r), m.Down.Reshape(r, cols)); err != nil {
			return fmt.Errorf("module %s: %w", m.Key, err)
		}
		for i, v := range y.F32 {
			w.F32[i] += scale * v
		}
		return nil
	}
	blas32.Gemm(blas.NoTrans, blas.NoTrans, scale,
		blas32.General{Rows: out, Cols: r, Stride: r, Data: m.Up.F32},
		blas32.General{Rows: r, Cols: cols, Stride: cols, Data: m.Down.F32},
		1, blas32.General{Rows: out, Cols: cols, Stride: cols, Data: w.F32})
	return nil
}

// Merged is the Source Apply returns.
type Merged struct {
	src    tensor.Source
	merged map[string]*tensor.Tensor
}

// Get returns the merged copy of a LoRA-affected weight, else src's tensor.
func (m *Merged) Get(name string) (*tensor.Tensor, bool) {
	if t, ok := m.merged[name]; ok {
		return t, true
	}
	return m.src.Get(name)
}

// Names lists src's names.
func (m *Merged) Names() []string { return m.src.Names() }

// Stored reports the dtype of merged weights ("F32", or the original's
// with KeepDType) and src's stored dtype otherwise (when src reports them).
func (m *Merged) Stored(name string) (string, []int, bool) {
	if t, ok := m.merged[name]; ok {
		return strings.ToUpper(t.DType.String()), append([]int(nil), t.Shape...), true
	}
	if s, ok := m.src.(interface {
		Stored(string) (string, []int, bool)
	}); ok {
		return s.Stored(name)
	}
	t, ok := m.src.Get(name)
	if !ok {
		return "", nil, false
	}
	return strings.ToUpper(t.DType.String()), append([]int(nil), t.Shape...), true
}

// Changed lists the weights that hold merged copies, sorted.
func (m *Merged) Changed() []string {
	out := make([]string, 0, len(m.merged))
	for n := range m.merged {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
