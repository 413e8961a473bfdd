// Package testmodel generates deterministic random-weight Stable Diffusion
// checkpoints for tests and benchmarks, in every layout gosd reads.
//
// Weights follow the shared generator ../shared/tools/mkckpt exactly, so the
// "full" SD 1.5 model here has the bytes of mkckpt's output for the same seed
// and dtype: each tensor has its own random stream, xoshiro256** seeded by
// splitmix64 from seed ^ fnv1a64(name); normals come from Box-Muller pairs
// (u1 replaced by 1-u1), are scaled by std (0.02) in float64 and rounded to
// float32, then to F16/BF16 with round-to-nearest-even. GroupNorm/LayerNorm
// weights are 1 and biases 0. Non-weight tensors (CLIP position_ids I64, the
// 12 DDPM schedule buffers F32 [1000], model_ema.decay F32 and
// model_ema.num_updates I32) are always written in the single-file layouts
// of SD 1.5 and SD 2.1 (SDXL files carry none).
//
// Families: "sd15", "sd21" (OpenCLIP ViT-H text encoder under
// cond_stage_model.model.*, linear transformer projections, 64-channel
// heads; its diffusers text_encoder drops OpenCLIP's unused last layer, as
// the released folders do) and "sdxl" (CLIP ViT-L under
// conditioner.embedders.0, OpenCLIP ViT-bigG under conditioner.embedders.1,
// label_emb, per-level transformer depth). "full" has the released names
// and shapes; "tiny" keeps each family's structure at small widths (see
// sd15Tiny, sd21Tiny, sdxlTiny).
//
// The same seed gives the same weights in every layout and dtype rounding,
// so images made from the single-file, .ckpt and diffusers forms are
// pixel-identical.
//
// The tiny configuration keeps the same N(0, 0.02^2) rule: it is small
// enough for the reference backend, and keeping one rule keeps the tiny and
// full models comparable.
package testmodel

import (
	"fmt"
	"math"
	"sync"

	"github.com/gosd/gosd/sd/tensor"
)

// DefaultSeed is mkckpt's default seed.
const DefaultSeed = 1234

// DefaultStd is the standard deviation of the random weights.
const DefaultStd = 0.02

// Options select what to generate.
type Options struct {
	Family string       // "sd15" (the default when empty), "sd21" or "sdxl"
	Size   string       // "tiny" or "full" (default "tiny")
	DType  tensor.DType // weight dtype: F32, F16 or BF16
	Layout string       // "single" (.safetensors), "ckpt" (PyTorch zip) or "diffusers" (folder); default "single"
	Seed   uint64       // random seed (mkckpt's default is DefaultSeed)
	Std    float64      // weight standard deviation; 0 means DefaultStd
	Output string       // file (single, ckpt) or folder (diffusers) to write

	// ConfigDir holds the real SD 1.5 diffusers configs (model_index.json,
	// unet/config.json, ...); TokenizerDir holds vocab.json and merges.txt.
	// Both are used by the diffusers layout only. Defaults:
	// ../shared/models/sd15 (found from the repository root) and its
	// tokenizer/ folder.
	ConfigDir    string
	TokenizerDir string
}

func (o *Options) config() (*config, error) {
	var tiny, full *config
	switch o.Family {
	case "", "sd15", "sd1", "sd1.5":
		tiny, full = &sd15Tiny, &sd15Full
	case "sd21", "sd2", "sd2.1":
		tiny, full = &sd21Tiny, &sd21Full
	case "sdxl":
		tiny, full = &sdxlTiny, &sdxlFull
	default:
		return nil, fmt.Errorf("testmodel: family %q is not supported (sd15, sd21, sdxl)", o.Family)
	}
	switch o.Size {
	case "", "tiny":
		return tiny, nil
	case "full":
		return full, nil
	}
	return nil, fmt.Errorf("testmodel: size %q: want tiny or full", o.Size)
}

func (o *Options) wdtype() (string, error) {
	switch o.DType {
	case tensor.F32:
		return "F32", nil
	case tensor.F16:
		return "F16", nil
	case tensor.BF16:
		return "BF16", nil
	}
	return "", fmt.Errorf("testmodel: weight dtype %s not supported", o.DType)
}

// Names lists the tensors a model would have (ldm names, sorted) with stored
// dtypes and shapes, without generating anything.
func Names(opts Options) ([]Spec, error) {
	c, err := opts.config()
	if err != nil {
		return nil, err
	}
	wd, err := opts.wdtype()
	if err != nil {
		return nil, err
	}
	specs := buildLayout(c, wd)
	out := make([]Spec, len(specs))
	for i, s := range specs {
		out[i] = Spec{Name: s.Name, DType: s.DType, Shape: append([]int(nil), s.Shape...)}
	}
	return out, nil
}

// Source is a lazy tensor source of a generated model: tensors are made on
// first Get and cached. It needs no files, so tests can build networks from
// it directly. It implements tensor.Source and reports stored dtypes.
type Source struct {
	specs map[string]*Spec
	names []string
	seed  uint64
	std   float64

	mu    sync.Mutex
	cache map[string]*tensor.Tensor
	keep  bool
}

// NewSource returns the model's tensors in ldm names. Integer buffers
// (position_ids, num_updates) are F32 tensors holding whole numbers, as
// every checkpoint reader in gosd returns them.
func NewSource(opts Options) (*Source, error) {
	c, err := opts.config()
	if err != nil {
		return nil, err
	}
	wd, err := opts.wdtype()
	if err != nil {
		return nil, err
	}
	s := &Source{specs: map[string]*Spec{}, seed: opts.Seed, std: opts.Std, cache: map[string]*tensor.Tensor{}, keep: true}
	if s.std == 0 {
		s.std = DefaultStd
	}
	for _, sp := range buildLayout(c, wd) {
		s.specs[sp.Name] = sp
		s.names = append(s.names, sp.Name)
	}
	return s, nil
}

// Names lists every tensor name, sorted.
func (s *Source) Names() []string { return append([]string(nil), s.names...) }

// Stored reports a tensor's stored dtype and shape.
func (s *Source) Stored(name string) (string, []int, bool) {
	sp, ok := s.specs[name]
	if !ok {
		return "", nil, false
	}
	return sp.DType, append([]int(nil), sp.Shape...), true
}

// Get generates (once) and returns the named tensor.
func (s *Source) Get(name string) (*tensor.Tensor, bool) {
	sp, ok := s.specs[name]
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	t, ok := s.cache[name]
	s.mu.Unlock()
	if ok {
		return t, true
	}
	t = generate(sp, s.seed, s.std)
	if s.keep {
		s.mu.Lock()
		s.cache[name] = t
		s.mu.Unlock()
	}
	return t, true
}

// generate makes one tensor's values as mkckpt does.
func generate(sp *Spec, seed uint64, std float64) *tensor.Tensor {
	n := tensor.Numel(sp.Shape)
	f := make([]float32, n)
	switch sp.init {
	case initNormal:
		r := newRNG(seed ^ fnv1a64(sp.Name))
		for i := 0; i < n; i += 2 {
			u1 := 1 - r.uniform()
			u2 := r.uniform()
			rad := math.Sqrt(-2 * math.Log(u1))
			sn, cs := math.Sincos(2 * math.Pi * u2)
			f[i] = float32(std * rad * cs)
			if i+1 < n {
				f[i+1] = float32(std * rad * sn)
			}
		}
	case initOnes:
		for i := range f {
			f[i] = 1
		}
	case initValues:
		for i, v := range sp.values {
			f[i] = float32(v)
		}
	}
	switch sp.DType {
	case "F16":
		h := make([]uint16, n)
		for i, v := range f {
			h[i] = tensor.F32ToF16(v)
		}
		return tensor.FromHalf(h, tensor.F16, sp.Shape...)
	case "BF16":
		h := make([]uint16, n)
		for i, v := range f {
			h[i] = tensor.F32ToBF16(v)
		}
		return tensor.FromHalf(h, tensor.BF16, sp.Shape...)
	}
	return tensor.FromF32(f, sp.Shape...)
}

func fnv1a64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// xoshiro is xoshiro256** (Blackman and Vigna, 2018) seeded by splitmix64.
type xoshiro struct{ s [4]uint64 }

func newRNG(seed uint64) *xoshiro {
	r := &xoshiro{}
	x := seed
	for i := range r.s {
		x += 0x9e3779b97f4a7c15
		z := x
		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		r.s[i] = z ^ (z >> 31)
	}
	return r
}

func rotl(x uint64, k uint) uint64 { return x<<k | x>>(64-k) }

func (r *xoshiro) next() uint64 {
	s := &r.s
	res := rotl(s[1]*5, 7) * 9
	t := s[1] << 17
	s[2] ^= s[0]
	s[3] ^= s[1]
	s[1] ^= s[2]
	s[0] ^= s[3]
	s[2] ^= t
	s[3] = rotl(s[3], 45)
	return res
}

// uniform returns a float64 in [0, 1) from the top 53 bits.
func (r *xoshiro) uniform() float64 { return float64(r.next()>>11) * (1.0 / (1 << 53)) }

func sqrt(x float64) float64 { return math.Sqrt(x) }
func log(x float64) float64  { return math.Log(x) }
