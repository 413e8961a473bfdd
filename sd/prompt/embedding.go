package prompt

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/tensor"
)

// Embedding is a textual-inversion embedding: vectors that replace the
// token-embedding rows wherever its name appears in a prompt.
type Embedding struct {
	Name    string         // file name without extension; what prompts refer to
	Path    string         // file it came from ("" when built in memory)
	Vectors *tensor.Tensor // [N, C] f32, one row per token it occupies
}

// N is the number of token positions the embedding occupies.
func (e *Embedding) N() int { return e.Vectors.Shape[0] }

// embeddingExts are the file types read, as A1111 does.
var embeddingExts = []string{".pt", ".bin", ".safetensors"}

// LoadEmbedding reads a textual-inversion file:
//   - A1111 .pt: a dict whose "string_to_param" holds one tensor [N, C];
//   - a .safetensors or .bin holding a single tensor (diffusers concepts,
//     "emb_params" of A1111's safetensors export), [N, C] or [C].
//
// The name is the file name without extension. Files with several terms
// are refused, as in A1111. SDXL files (clip_l/clip_g) are read with
// LoadEmbeddingKey.
func LoadEmbedding(path string) (*Embedding, error) { return LoadEmbeddingKey(path, "") }

// LoadEmbeddingKey is LoadEmbedding for the tensor named key of a file that
// holds one embedding per text encoder: SDXL embeddings store "clip_l"
// (for CLIP ViT-L) and "clip_g" (for OpenCLIP ViT-bigG). An empty key reads
// single-encoder files as LoadEmbedding does.
func LoadEmbeddingKey(path, key string) (*Embedding, error) {
	c, err := ckpt.Open(path, ckpt.Options{})
	if err != nil {
		return nil, fmt.Errorf("embedding %s: %w", path, err)
	}
	defer c.Close()
	names := c.Names()
	var pick string
	var params []string
	for _, n := range names {
		if strings.HasPrefix(n, "string_to_param.") || strings.HasPrefix(n, "string_to_param._parameters.") {
			params = append(params, n)
		}
	}
	has := map[string]bool{}
	for _, n := range names {
		has[n] = true
	}
	switch {
	case key != "" && has[key]:
		pick = key
	case key != "":
		return nil, fmt.Errorf("embedding %s: no %q tensor; SDXL models need SDXL embeddings (clip_l and clip_g), this file has %s",
			path, key, strings.Join(names[:min(4, len(names))], ", "))
	case len(params) == 1:
		pick = params[0]
	case len(params) > 1:
		return nil, fmt.Errorf("embedding %s: string_to_param has %d terms (%s); only one is supported", path, len(params), strings.Join(params, ", "))
	case len(names) == 1:
		pick = names[0]
	default:
		if has["clip_l"] || has["clip_g"] {
			return nil, fmt.Errorf("embedding %s: an SDXL embedding (clip_l/clip_g) cannot be used with this model", path)
		}
		return nil, fmt.Errorf("embedding %s: %d tensors (%s): not a textual-inversion embedding (want string_to_param or a single tensor)",
			path, len(names), strings.Join(names[:min(4, len(names))], ", "))
	}
	t, ok := c.Get(pick)
	if !ok {
		return nil, fmt.Errorf("embedding %s: tensor %q cannot be read", path, pick)
	}
	shape := t.Shape
	switch len(shape) {
	case 1:
		shape = []int{1, shape[0]}
	case 2:
	default:
		return nil, fmt.Errorf("embedding %s: tensor %q has shape %s, want [N, C]", path, pick, tensor.ShapeString(t.Shape))
	}
	if shape[0] < 1 || shape[1] < 1 {
		return nil, fmt.Errorf("embedding %s: tensor %q is empty (%s)", path, pick, tensor.ShapeString(t.Shape))
	}
	vec := tensor.FromF32(append([]float32(nil), t.Float32s()...), shape...)
	base := filepath.Base(path)
	return &Embedding{Name: strings.TrimSuffix(base, filepath.Ext(base)), Path: path, Vectors: vec}, nil
}

// Embeddings is a set of textual-inversion embeddings of one width.
type Embeddings struct {
	Width int
	list  []*Embedding // sorted by name
}

// NewEmbeddings checks that every embedding has width C (the text model's
// Hidden) and at most 75 vectors, and that names are unique.
func NewEmbeddings(width int, embs ...*Embedding) (*Embeddings, error) {
	s := &Embeddings{Width: width}
	seen := map[string]string{}
	for _, e := range embs {
		where := e.Path
		if where == "" {
			where = e.Name
		}
		if e.Vectors == nil || len(e.Vectors.Shape) != 2 || e.Vectors.DType != tensor.F32 {
			return nil, fmt.Errorf("embedding %s: vectors must be f32 [N, C]", where)
		}
		if e.Vectors.Shape[1] != width {
			return nil, fmt.Errorf("embedding %s: vectors are %d wide but the text encoder is %d wide (made for another model family?)",
				where, e.Vectors.Shape[1], width)
		}
		if n := e.Vectors.Shape[0]; n < 1 || n > chunkLength {
			return nil, fmt.Errorf("embedding %s: %d vectors; a prompt chunk holds at most %d", where, n, chunkLength)
		}
		if e.Name == "" {
			return nil, fmt.Errorf("embedding %s: empty name", where)
		}
		if p, dup := seen[e.Name]; dup {
			return nil, fmt.Errorf("embedding name %q is used by both %s and %s", e.Name, p, where)
		}
		seen[e.Name] = where
		s.list = append(s.list, e)
	}
	sort.Slice(s.list, func(i, j int) bool { return s.list[i].Name < s.list[j].Name })
	return s, nil
}

// LoadEmbeddingsDir loads every .pt, .bin and .safetensors file in dir and
// its subfolders (as A1111's --embeddings-dir) and checks them for width C.
// Any unreadable or misfitting file is an error naming it.
func LoadEmbeddingsDir(dir string, width int) (*Embeddings, error) {
	return LoadEmbeddingsDirKey(dir, width, "")
}

// LoadEmbeddingsDirKey is LoadEmbeddingsDir reading each file with
// LoadEmbeddingKey(path, key): "clip_l" or "clip_g" for SDXL's two encoders.
func LoadEmbeddingsDirKey(dir string, width int, key string) (*Embeddings, error) {
	var embs []*Embedding
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		ext := strings.ToLower(filepath.Ext(p))
		ok := false
		for _, e := range embeddingExts {
			ok = ok || ext == e
		}
		if !ok {
			return nil
		}
		e, err := LoadEmbeddingKey(p, key)
		if err != nil {
			return err
		}
		embs = append(embs, e)
		return nil
	})
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) && pe.Path == dir {
			return nil, fmt.Errorf("embeddings dir: %w", err)
		}
		return nil, err
	}
	return NewEmbeddings(width, embs...)
}

// Names lists the embeddings' names, sorted.
func (s *Embeddings) Names() []string {
	if s == nil {
		return nil
	}
	out := make([]string, len(s.list))
	for i, e := range s.list {
		out[i] = e.Name
	}
	return out
}

// Get returns the embedding with the given name.
func (s *Embeddings) Get(name string) (*Embedding, bool) {
	if s == nil {
		return nil, false
	}
	for _, e := range s.list {
		if e.Name == name {
			return e, true
		}
	}
	return nil, false
}
