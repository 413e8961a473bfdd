package ckpt

import (
	"archive/zip"
	"bytes"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/gosd/gosd/sd/tensor"
)

// maxPickle bounds the size of data.pkl (the object graph, not the weights).
const maxPickle = 1 << 30

// TorchZip is an open PyTorch zip checkpoint (.ckpt, .pth) as written by
// torch.save. The file is memory-mapped; storages stored uncompressed (as
// torch writes them) are used in place, compressed ones are inflated once.
type TorchZip struct {
	path    string
	mm      []byte
	prefix  string // "<folder>/"
	files   map[string]*zip.File
	tensors map[string]*tensorRef
	names   []string
	extra   map[string]any // top-level non-tensor scalars (global_step, epoch, ...)

	mu       sync.Mutex
	cache    map[string]*tensor.Tensor
	storages map[string][]byte
}

// OpenTorchZip opens a PyTorch zip checkpoint and reads its object graph with
// the restricted unpickler. Tensors are taken from a "state_dict" entry when
// there is one, else from the top-level dict, else from a "model" or "module"
// dict. Legacy (non-zip) pickles are refused.
func OpenTorchZip(path string) (*TorchZip, error) {
	mm, err := mapFile(path, kindZip, "is not a PyTorch zip checkpoint")
	if err != nil {
		return nil, err
	}
	z := &TorchZip{path: path, mm: mm, files: map[string]*zip.File{},
		cache: map[string]*tensor.Tensor{}, storages: map[string][]byte{}}
	if err := z.load(); err != nil {
		unmap(mm)
		return nil, err
	}
	return z, nil
}

func (z *TorchZip) load() error {
	zr, err := zip.NewReader(bytes.NewReader(z.mm), int64(len(z.mm)))
	if err != nil {
		return formatErr(z.path, "", "is not a readable zip archive (truncated?): %v", err)
	}
	var pkl *zip.File
	for _, f := range zr.File {
		z.files[f.Name] = f
		dir, base, ok := strings.Cut(f.Name, "/")
		if ok && base == "data.pkl" && pkl == nil {
			pkl, z.prefix = f, dir+"/"
		} else if !ok && f.Name == "data.pkl" && pkl == nil {
			pkl, z.prefix = f, ""
		}
	}
	if pkl == nil {
		return formatErr(z.path, "", "zip archive has no <folder>/data.pkl entry: not a PyTorch checkpoint")
	}
	if bo, ok := z.files[z.prefix+"byteorder"]; ok {
		b, err := z.readEntry(bo, 16)
		if err == nil && strings.TrimSpace(string(b)) != "little" {
			return formatErr(z.path, "", "storages are %q-endian; only little-endian checkpoints are read", b)
		}
	}
	if pkl.UncompressedSize64 > maxPickle {
		return formatErr(z.path, "", "%s is %d bytes, too large for a checkpoint's object graph", pkl.Name, pkl.UncompressedSize64)
	}
	data, err := z.readEntry(pkl, int64(pkl.UncompressedSize64))
	if err != nil {
		return formatErr(z.path, "", "reading %s: %v", pkl.Name, err)
	}
	root, err := unpickle(data, z.persistentLoad)
	if err != nil {
		return formatErr(z.path, "", "%s: %v", pkl.Name, err)
	}
	return z.collect(root)
}

// persistentLoad resolves ('storage', StorageType, key, location, numel).
func (z *TorchZip) persistentLoad(pid any) (any, error) {
	t, ok := pid.(pyTuple)
	if !ok || len(t) < 5 {
		return nil, fmt.Errorf("pickle: persistent id %v is not a storage tuple", pid)
	}
	if tag, _ := t[0].(string); tag != "storage" {
		return nil, fmt.Errorf("pickle: persistent id tag %v is not \"storage\"", t[0])
	}
	g, ok := t[1].(pyGlobal)
	dtype := storageDTypes[g.name]
	if !ok || g.module != "torch" || dtype == "" {
		return nil, fmt.Errorf("pickle: storage type %v is not a torch storage", t[1])
	}
	key, ok := t[2].(string)
	if !ok {
		return nil, fmt.Errorf("pickle: storage key %v is not a string", t[2])
	}
	numel, ok := toInt(t[4])
	if !ok || numel < 0 {
		return nil, fmt.Errorf("pickle: storage %q has a bad element count %v", key, t[4])
	}
	f, ok := z.files[z.prefix+"data/"+key]
	if !ok {
		return nil, fmt.Errorf("storage %q: zip entry %sdata/%s is missing", key, z.prefix, key)
	}
	if need := uint64(numel) * uint64(stItemSize[dtype]); f.UncompressedSize64 < need {
		return nil, fmt.Errorf("storage %q: zip entry holds %d bytes, %d %s elements need %d",
			key, f.UncompressedSize64, numel, dtype, need)
	}
	return &storageRef{dtype: dtype, key: key, numel: numel}, nil
}

// readEntry returns an entry's bytes: a slice of the mapping when stored
// uncompressed, else inflated (at most limit bytes).
func (z *TorchZip) readEntry(f *zip.File, limit int64) ([]byte, error) {
	if f.Method == zip.Store && f.CompressedSize64 == f.UncompressedSize64 {
		off, err := f.DataOffset()
		if err != nil {
			return nil, err
		}
		end := off + int64(f.UncompressedSize64)
		if off < 0 || end > int64(len(z.mm)) || end < off {
			return nil, fmt.Errorf("zip entry %s runs past the end of the file (truncated?)", f.Name)
		}
		if int64(f.UncompressedSize64) > limit {
			end = off + limit
		}
		return z.mm[off:end], nil
	}
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, limit))
}

// collect picks the tensor dict out of the unpickled object.
func (z *TorchZip) collect(root any) error {
	d, ok := root.(*pyDict)
	if !ok {
		return formatErr(z.path, "", "checkpoint holds a %s, not a dict of tensors", pyTypeName(root))
	}
	z.extra = map[string]any{}
	for i, k := range d.keys {
		if ks, ok := k.(string); ok {
			switch v := d.vals[i].(type) {
			case int64, float64, string, bool:
				z.extra[ks] = v
			}
		}
	}
	src := d
	if sd, ok := d.get("state_dict"); ok {
		if sdd, ok := sd.(*pyDict); ok {
			src = sdd
		}
	} else if countTensors(d) == 0 {
		for _, k := range []string{"model", "module"} {
			if m, ok := d.get(k); ok {
				if md, ok := m.(*pyDict); ok && countTensors(md) > 0 {
					src = md
					break
				}
			}
		}
	}
	z.tensors = map[string]*tensorRef{}
	for i, k := range src.keys {
		name, ok := k.(string)
		t, isT := src.vals[i].(*tensorRef)
		if ok && isT {
			z.tensors[name] = t
			z.names = append(z.names, name)
		}
	}
	if len(z.names) == 0 {
		// Last resort: tensors in nested dicts, named by their dotted key
		// path (A1111 textual-inversion files keep theirs under
		// "string_to_param": {"*": tensor} -> "string_to_param.*").
		z.flatten(d, "", 0)
	}
	sort.Strings(z.names)
	if len(z.names) == 0 {
		return formatErr(z.path, "", "no tensors found (looked in state_dict, the top-level dict, model, module and nested dicts)")
	}
	return nil
}

// flatten records the tensors of nested dicts with string keys under
// "<prefix><key>.<key>...", at most 8 levels deep.
func (z *TorchZip) flatten(d *pyDict, prefix string, depth int) {
	if depth >= 8 {
		return
	}
	for i, k := range d.keys {
		name, ok := k.(string)
		if !ok {
			continue
		}
		switch v := d.vals[i].(type) {
		case *tensorRef:
			if _, dup := z.tensors[prefix+name]; !dup {
				z.tensors[prefix+name] = v
				z.names = append(z.names, prefix+name)
			}
		case *pyDict:
			z.flatten(v, prefix+name+".", depth+1)
		}
	}
}

func countTensors(d *pyDict) int {
	n := 0
	for _, v := range d.vals {
		if _, ok := v.(*tensorRef); ok {
			n++
		}
	}
	return n
}

func pyTypeName(v any) string {
	switch v.(type) {
	case nil:
		return "None"
	case *pyList:
		return "list"
	case pyTuple:
		return "tuple"
	case *tensorRef:
		return "single tensor"
	}
	return fmt.Sprintf("%T", v)
}

// Path is the file that was opened.
func (z *TorchZip) Path() string { return z.path }

// Extra returns top-level scalar entries of the checkpoint (e.g. "global_step",
// "epoch") keyed by name.
func (z *TorchZip) Extra() map[string]any { return z.extra }

// Names lists every tensor name, sorted.
func (z *TorchZip) Names() []string { return append([]string(nil), z.names...) }

// Stored reports a tensor's stored dtype ("F16", "I64", ...) and shape.
func (z *TorchZip) Stored(name string) (string, []int, bool) {
	t, ok := z.tensors[name]
	if !ok {
		return "", nil, false
	}
	return t.storage.dtype, append([]int(nil), t.shape...), true
}

// Get returns the named tensor, built once and cached. Contiguous views of
// uncompressed storages alias the mapping when aligned; strided views are
// copied. Integer and F64 storages are converted to F32. A storage that
// cannot be read (corrupt compressed entry) makes Get report false; use
// Load for the error.
func (z *TorchZip) Get(name string) (*tensor.Tensor, bool) {
	t, err := z.Load(name)
	return t, err == nil && t != nil
}

// Load is Get with an error.
func (z *TorchZip) Load(name string) (*tensor.Tensor, error) {
	ref, ok := z.tensors[name]
	if !ok {
		return nil, formatErr(z.path, name, "no such tensor")
	}
	z.mu.Lock()
	defer z.mu.Unlock()
	if t, ok := z.cache[name]; ok {
		return t, nil
	}
	if z.mm == nil {
		return nil, formatErr(z.path, name, "checkpoint is closed")
	}
	st := ref.storage
	raw, ok := z.storages[st.key]
	if !ok {
		f := z.files[z.prefix+"data/"+st.key]
		item := stItemSize[st.dtype]
		b, err := z.readEntry(f, st.numel*item)
		if err != nil {
			return nil, formatErr(z.path, name, "storage %q: %v", st.key, err)
		}
		if int64(len(b)) < st.numel*item {
			return nil, formatErr(z.path, name, "storage %q: %d bytes, want %d (truncated?)", st.key, len(b), st.numel*item)
		}
		raw = b
		z.storages[st.key] = raw
	}
	t := decodeRaw(st.dtype, ref.shape, viewBytes(raw, stItemSize[st.dtype], ref))
	z.cache[name] = t
	return t, nil
}

// viewBytes returns the bytes of a tensor view in row-major order: a
// sub-slice when the view is contiguous, else a gathered copy.
func viewBytes(raw []byte, item int64, ref *tensorRef) []byte {
	numel := int64(tensor.Numel(ref.shape))
	contiguous := true
	expect := int64(1)
	for i := len(ref.shape) - 1; i >= 0; i-- {
		if ref.shape[i] != 1 && ref.stride[i] != expect {
			contiguous = false
			break
		}
		expect *= int64(ref.shape[i])
	}
	if contiguous || numel == 0 {
		return raw[ref.offset*item : (ref.offset+numel)*item]
	}
	out := make([]byte, 0, numel*item)
	idx := make([]int, len(ref.shape))
	for n := int64(0); n < numel; n++ {
		pos := ref.offset
		for d, i := range idx {
			pos += int64(i) * ref.stride[d]
		}
		out = append(out, raw[pos*item:(pos+1)*item]...)
		for d := len(idx) - 1; d >= 0; d-- {
			idx[d]++
			if idx[d] < ref.shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out
}

// Close unmaps the file. Tensors from Get must not be used afterwards.
func (z *TorchZip) Close() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	if z.mm == nil {
		return nil
	}
	err := unmap(z.mm)
	z.mm, z.cache, z.storages = nil, nil, nil
	return err
}
