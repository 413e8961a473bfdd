package ckpt

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/gosd/gosd/sd/tensor"
)

// DiffusersComponents are the weight-carrying folders of an SD 1.x/2.x
// diffusers pipeline that are mapped to ldm names.
var DiffusersComponents = []string{"unet", "vae", "text_encoder"}

// optionalComponents are read when present (SDXL's second text encoder).
var optionalComponents = []string{"text_encoder_2"}

// weightFiles lists the weight file names tried in each component folder,
// in order of preference (full precision first, then the fp16 variant,
// then PyTorch .bin files).
var weightFiles = []string{
	"diffusion_pytorch_model.safetensors", "model.safetensors",
	"diffusion_pytorch_model.fp16.safetensors", "model.fp16.safetensors",
	"diffusion_pytorch_model.bin", "pytorch_model.bin",
	"diffusion_pytorch_model.fp16.bin", "pytorch_model.fp16.bin",
}

// closingSource is an opened weights file.
type closingSource interface {
	StoredSource
	Close() error
}

// Diffusers is an open diffusers folder, exposed as a tensor.Source in ldm
// names (VAE attention linears reshaped to 1x1 convolutions).
type Diffusers struct {
	Dir          string
	ModelIndex   []byte            // raw model_index.json (nil if absent)
	Configs      map[string][]byte // raw config.json per component; "scheduler" holds scheduler_config.json
	TokenizerDir string            // the tokenizer/ folder, "" when absent
	// SchedulerConfig is the path of scheduler/scheduler_config.json, "" when absent.
	SchedulerConfig string
	// Weights lists the weight files read per component.
	Weights  map[string][]string
	Unmapped []string // "<component>/<name>" tensors with no ldm counterpart

	srcs   map[string]closingSource // component -> weights
	keymap *KeyMap
	toDiff map[string]string // ldm -> "<component>/<name>"
	names  []string
	mu     sync.Mutex
	shaped map[string]*tensor.Tensor
}

// OpenDiffusers opens a diffusers folder (the folder, or its model_index.json).
func OpenDiffusers(path string) (*Diffusers, error) {
	dir := path
	if filepath.Base(path) == "model_index.json" {
		dir = filepath.Dir(path)
	}
	d := &Diffusers{Dir: dir, Configs: map[string][]byte{}, Weights: map[string][]string{},
		srcs: map[string]closingSource{}, toDiff: map[string]string{}, shaped: map[string]*tensor.Tensor{}}
	if b, err := os.ReadFile(filepath.Join(dir, "model_index.json")); err == nil {
		if !json.Valid(b) {
			return nil, formatErr(filepath.Join(dir, "model_index.json"), "", "is not valid JSON")
		}
		d.ModelIndex = b
	}
	if p := filepath.Join(dir, "scheduler", "scheduler_config.json"); fileExists(p) {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		d.Configs["scheduler"], d.SchedulerConfig = b, p
	}
	if st, err := os.Stat(filepath.Join(dir, "tokenizer")); err == nil && st.IsDir() {
		d.TokenizerDir = filepath.Join(dir, "tokenizer")
	}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	for _, comp := range DiffusersComponents {
		if st, err := os.Stat(filepath.Join(dir, comp)); err != nil || !st.IsDir() {
			return nil, formatErr(dir, "", "diffusers folder has no %s/ folder", comp)
		}
	}
	var all []string
	comps := append([]string(nil), DiffusersComponents...)
	for _, comp := range optionalComponents {
		if st, err := os.Stat(filepath.Join(dir, comp)); err == nil && st.IsDir() {
			comps = append(comps, comp)
		}
	}
	for _, comp := range comps {
		cdir := filepath.Join(dir, comp)
		if b, err := os.ReadFile(filepath.Join(cdir, "config.json")); err == nil {
			if !json.Valid(b) {
				return nil, formatErr(filepath.Join(cdir, "config.json"), "", "is not valid JSON")
			}
			d.Configs[comp] = b
		}
		src, files, err := openComponent(cdir)
		if err != nil {
			return nil, err
		}
		d.srcs[comp] = src
		d.Weights[comp] = files
		for _, n := range src.Names() {
			all = append(all, comp+"/"+n)
		}
	}
	km, err := NewKeyMap(all)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	km.useConfigs(d.Configs)
	d.keymap = km
	have := map[string]bool{}
	for _, dn := range all {
		have[dn] = true
	}
	for _, dn := range all {
		ldm, ok := km.ToLDM(dn)
		if !ok {
			d.Unmapped = append(d.Unmapped, dn)
			continue
		}
		if km.IsComposite(ldm) {
			// Stored as parts (fused q/k/v) or transposed: list the name
			// once, when every part is present.
			parts, _, _ := km.DiffusersParts(ldm)
			complete := true
			for _, p := range parts {
				complete = complete && have[p]
			}
			if !complete {
				d.Unmapped = append(d.Unmapped, dn)
			} else if _, seen := d.toDiff[ldm]; !seen {
				d.toDiff[ldm] = dn
				d.names = append(d.names, ldm)
			}
			continue
		}
		if prev, dup := d.toDiff[ldm]; dup {
			return nil, formatErr(dir, ldm, "both %s and %s map to it", prev, dn)
		}
		d.toDiff[ldm] = dn
		d.names = append(d.names, ldm)
	}
	sort.Strings(d.names)
	ok = true
	return d, nil
}

// openComponent opens the weights of one component folder, including
// sharded safetensors described by an index file.
func openComponent(cdir string) (closingSource, []string, error) {
	for _, f := range weightFiles {
		p := filepath.Join(cdir, f)
		if _, err := os.Stat(p); err == nil {
			src, err := openWeightsFile(p)
			if err != nil {
				return nil, nil, err
			}
			return src, []string{p}, nil
		}
	}
	for _, idx := range []string{"diffusion_pytorch_model.safetensors.index.json", "model.safetensors.index.json",
		"diffusion_pytorch_model.fp16.safetensors.index.json", "model.fp16.safetensors.index.json"} {
		p := filepath.Join(cdir, idx)
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var index struct {
			WeightMap map[string]string `json:"weight_map"`
		}
		if err := json.Unmarshal(b, &index); err != nil || len(index.WeightMap) == 0 {
			return nil, nil, formatErr(p, "", "is not a safetensors shard index (weight_map missing)")
		}
		shards := map[string]bool{}
		for _, f := range index.WeightMap {
			if strings.Contains(f, "/") || strings.Contains(f, `\`) {
				return nil, nil, formatErr(p, "", "shard name %q is not a plain file name", f)
			}
			shards[f] = true
		}
		var files []string
		for f := range shards {
			files = append(files, filepath.Join(cdir, f))
		}
		sort.Strings(files)
		m := &multiSource{}
		for _, f := range files {
			s, err := openWeightsFile(f)
			if err != nil {
				m.Close()
				return nil, nil, err
			}
			m.add(s)
		}
		return m, files, nil
	}
	return nil, nil, formatErr(cdir, "", "no weights file (looked for %s and sharded safetensors)", strings.Join(weightFiles, ", "))
}

func openWeightsFile(p string) (closingSource, error) {
	kind, err := sniffFile(p)
	if err != nil {
		return nil, err
	}
	if kind == kindZip {
		return OpenTorchZip(p)
	}
	return OpenSafetensors(p)
}

// multiSource joins several weight files (shards) into one source.
type multiSource struct {
	srcs  []closingSource
	owner map[string]closingSource
	names []string
}

func (m *multiSource) add(s closingSource) {
	if m.owner == nil {
		m.owner = map[string]closingSource{}
	}
	m.srcs = append(m.srcs, s)
	for _, n := range s.Names() {
		if _, dup := m.owner[n]; !dup {
			m.names = append(m.names, n)
		}
		m.owner[n] = s
	}
	sort.Strings(m.names)
}

func (m *multiSource) Names() []string { return append([]string(nil), m.names...) }

func (m *multiSource) Get(name string) (*tensor.Tensor, bool) {
	if s, ok := m.owner[name]; ok {
		return s.Get(name)
	}
	return nil, false
}

func (m *multiSource) Stored(name string) (string, []int, bool) {
	if s, ok := m.owner[name]; ok {
		return s.Stored(name)
	}
	return "", nil, false
}

func (m *multiSource) Close() error {
	var first error
	for _, s := range m.srcs {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Names lists every tensor in ldm names, sorted.
func (d *Diffusers) Names() []string { return append([]string(nil), d.names...) }

// DiffusersName returns the "<component>/<name>" a given ldm name is read from.
func (d *Diffusers) DiffusersName(ldm string) (string, bool) {
	dn, ok := d.toDiff[ldm]
	return dn, ok
}

// Get returns the tensor under an ldm name, reshaped to the ldm shape.
func (d *Diffusers) Get(name string) (*tensor.Tensor, bool) {
	dn, ok := d.toDiff[name]
	if !ok {
		return nil, false
	}
	if d.keymap.IsComposite(name) {
		return d.getComposite(name)
	}
	comp, rest, _ := strings.Cut(dn, "/")
	t, ok := d.srcs[comp].Get(rest)
	if !ok || !isVAEAttnMatrix(name) {
		return t, ok
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.shaped[name]; ok {
		return s, true
	}
	s := toLDMShape(name, t)
	d.shaped[name] = s
	return s, true
}

// Stored reports the stored dtype and ldm shape of a tensor.
func (d *Diffusers) Stored(name string) (string, []int, bool) {
	dn, ok := d.toDiff[name]
	if !ok {
		return "", nil, false
	}
	if parts, tr, _ := d.keymap.DiffusersParts(name); d.keymap.IsComposite(name) {
		var dt string
		var shape []int
		for _, p := range parts {
			comp, rest, _ := strings.Cut(p, "/")
			pdt, ps, ok := d.srcs[comp].Stored(rest)
			if !ok || len(ps) == 0 {
				return "", nil, false
			}
			if shape == nil {
				dt, shape = pdt, append([]int(nil), ps...)
			} else {
				shape[0] += ps[0]
			}
		}
		if tr && len(shape) == 2 {
			shape[0], shape[1] = shape[1], shape[0]
		}
		return dt, shape, true
	}
	comp, rest, _ := strings.Cut(dn, "/")
	dt, shape, ok := d.srcs[comp].Stored(rest)
	if ok && isVAEAttnMatrix(name) && len(shape) == 2 {
		shape = append(shape, 1, 1)
	}
	return dt, shape, ok
}

// getComposite joins (and caches) a tensor stored as several diffusers
// parts or transposed (see KeyMap.DiffusersParts).
func (d *Diffusers) getComposite(name string) (*tensor.Tensor, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if s, ok := d.shaped[name]; ok {
		return s, true
	}
	names, tr, _ := d.keymap.DiffusersParts(name)
	var parts []*tensor.Tensor
	for _, p := range names {
		comp, rest, _ := strings.Cut(p, "/")
		t, ok := d.srcs[comp].Get(rest)
		if !ok {
			return nil, false
		}
		parts = append(parts, t)
	}
	t, err := joinParts(name, parts, tr)
	if err != nil {
		return nil, false
	}
	d.shaped[name] = t
	return t, true
}

// Close closes every weights file.
func (d *Diffusers) Close() error {
	var first error
	for _, s := range d.srcs {
		if err := s.Close(); err != nil && first == nil {
			first = err
		}
	}
	d.srcs = map[string]closingSource{}
	return first
}

// DiffusersWriteOptions describe the non-weight files of a diffusers folder.
type DiffusersWriteOptions struct {
	ModelIndex   []byte            // model_index.json contents
	Configs      map[string][]byte // config.json per component; "scheduler" -> scheduler/scheduler_config.json
	TokenizerDir string            // files copied into tokenizer/ (vocab.json, merges.txt, ...); "" skips
	Torch        bool              // write PyTorch .bin weights instead of safetensors
}

// WriteDiffusers writes the ldm-named tensors of src as a diffusers folder:
// unet/diffusion_pytorch_model.safetensors, vae/..., text_encoder/model.safetensors
// (VAE attention 1x1 convolutions become linears), plus the given configs and
// tokenizer files. Tensors without a diffusers counterpart (DDPM schedule
// buffers, EMA copies) are left out.
func WriteDiffusers(dir string, src tensor.Source, opts DiffusersWriteOptions) error {
	names := src.Names()
	km, err := NewKeyMap(names)
	if err != nil {
		return err
	}
	views := map[string]*renamedSource{}
	comps := append(append([]string(nil), DiffusersComponents...), optionalComponents...)
	for _, comp := range comps {
		views[comp] = &renamedSource{src: src, toSrc: map[string]string{}, parts: map[string]partRef{}}
	}
	for _, n := range names {
		parts, tr, ok := km.DiffusersParts(n)
		if !ok {
			continue
		}
		for i, dn := range parts {
			comp, rest, _ := strings.Cut(dn, "/")
			v := views[comp]
			v.toSrc[rest] = n
			v.names = append(v.names, rest)
			if len(parts) > 1 || tr {
				v.parts[rest] = partRef{i, len(parts), tr}
			}
		}
	}
	for _, comp := range comps {
		if len(views[comp].names) == 0 && !slices.Contains(DiffusersComponents, comp) {
			continue // no SDXL second text encoder
		}
		cdir := filepath.Join(dir, comp)
		if err := os.MkdirAll(cdir, 0o755); err != nil {
			return err
		}
		v := views[comp]
		sort.Strings(v.names)
		if len(v.names) > 0 {
			file := "diffusion_pytorch_model"
			if strings.HasPrefix(comp, "text_encoder") {
				file = "model"
			}
			var err error
			if opts.Torch {
				if strings.HasPrefix(comp, "text_encoder") {
					file = "pytorch_model"
				}
				err = WriteTorchZip(filepath.Join(cdir, file+".bin"), v, WriteOptions{}, false)
			} else {
				err = WriteSafetensors(filepath.Join(cdir, file+".safetensors"), v, WriteOptions{Metadata: map[string]string{"format": "pt"}})
			}
			if err != nil {
				return err
			}
		}
		if c, ok := opts.Configs[comp]; ok {
			if err := os.WriteFile(filepath.Join(cdir, "config.json"), c, 0o644); err != nil {
				return err
			}
		}
	}
	if c, ok := opts.Configs["scheduler"]; ok {
		if err := os.MkdirAll(filepath.Join(dir, "scheduler"), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "scheduler", "scheduler_config.json"), c, 0o644); err != nil {
			return err
		}
	}
	if opts.ModelIndex != nil {
		if err := os.WriteFile(filepath.Join(dir, "model_index.json"), opts.ModelIndex, 0o644); err != nil {
			return err
		}
	}
	if opts.TokenizerDir != "" {
		if err := copyDir(opts.TokenizerDir, filepath.Join(dir, "tokenizer")); err != nil {
			return err
		}
	}
	return nil
}

// renamedSource shows ldm tensors under diffusers names and shapes.
type renamedSource struct {
	src   tensor.Source
	toSrc map[string]string
	names []string
	parts map[string]partRef // names that are a part of an ldm tensor
}

// partRef locates one diffusers part of an ldm tensor (see splitPart).
type partRef struct {
	i, n      int
	transpose bool
}

func (r *renamedSource) Names() []string { return append([]string(nil), r.names...) }

func (r *renamedSource) Get(name string) (*tensor.Tensor, bool) {
	ldm, ok := r.toSrc[name]
	if !ok {
		return nil, false
	}
	t, ok := r.src.Get(ldm)
	if !ok {
		return nil, false
	}
	if p, ok := r.parts[name]; ok {
		return splitPart(t, p.i, p.n, p.transpose), true
	}
	return toDiffusersShape(ldm, t), true
}

func (r *renamedSource) Stored(name string) (string, []int, bool) {
	ldm, ok := r.toSrc[name]
	if !ok {
		return "", nil, false
	}
	var dt string
	var shape []int
	if ss, ok := r.src.(StoredSource); ok {
		if dt, shape, ok = ss.Stored(ldm); !ok {
			return "", nil, false
		}
	} else {
		t, ok := r.src.Get(ldm)
		if !ok {
			return "", nil, false
		}
		dt, shape = stDType(t.DType), t.Shape
	}
	if isVAEAttnMatrix(ldm) && len(shape) == 4 {
		shape = shape[:2]
	}
	if p, ok := r.parts[name]; ok {
		shape = partShape(shape, p.n, p.transpose)
	}
	return dt, shape, true
}

// copyDir copies the regular files of src (not recursively) into dst.
func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}
