package ckpt

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"sort"
	"sync"
	"unsafe"

	"github.com/gosd/gosd/sd/tensor"
)

// maxHeader bounds a safetensors JSON header (the format's own limit is 100 MB).
const maxHeader = 100 << 20

// stEntry is one tensor of a safetensors header. begin and end are offsets
// into the data section that follows the header.
type stEntry struct {
	name       string
	dtype      string
	shape      []int
	begin, end int64
}

// stItemSize gives the element size of every dtype this reader accepts.
// F32, F16 and BF16 are weights and keep their type; the others are buffers
// (position ids, schedules, counters) and are converted to F32.
var stItemSize = map[string]int64{
	"F32": 4, "F16": 2, "BF16": 2,
	"F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
}

// SafeTensors is an open, memory-mapped safetensors file. Tensors returned by
// Get alias the mapping where alignment allows and stay valid until Close.
type SafeTensors struct {
	path     string
	data     []byte // whole file mapping
	base     int64  // file offset of the data section
	entries  map[string]*stEntry
	names    []string
	metadata map[string]string

	mu    sync.Mutex
	cache map[string]*tensor.Tensor
}

// OpenSafetensors memory-maps a .safetensors file and validates its header:
// header length within the file, JSON well formed, known dtypes, offsets
// inside the data section, sizes matching shapes, no overlapping tensors.
func OpenSafetensors(path string) (*SafeTensors, error) {
	data, err := mapFile(path, kindSafetensors, "is not a safetensors file")
	if err != nil {
		return nil, err
	}
	size := int64(len(data))
	if size < 8 {
		unmap(data)
		return nil, formatErr(path, "", "is too short (%d bytes) for a safetensors header", size)
	}
	hlen := binary.LittleEndian.Uint64(data[:8])
	if hlen > maxHeader {
		unmap(data)
		return nil, formatErr(path, "", "safetensors header length %d is absurd (limit %d)", hlen, maxHeader)
	}
	if int64(hlen) > size-8 {
		unmap(data)
		return nil, formatErr(path, "", "safetensors header length %d runs past the end of the %d-byte file (truncated?)", hlen, size)
	}
	base := 8 + int64(hlen)
	entries, meta, err := parseSTHeader(path, data[8:base], size-base)
	if err != nil {
		unmap(data)
		return nil, err
	}
	s := &SafeTensors{path: path, data: data, base: base, entries: entries, metadata: meta,
		cache: map[string]*tensor.Tensor{}}
	s.names = make([]string, 0, len(entries))
	for n := range entries {
		s.names = append(s.names, n)
	}
	sort.Strings(s.names)
	return s, nil
}

type stHeaderEntry struct {
	Dtype       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// parseSTHeader validates a safetensors JSON header against a data section of
// dataLen bytes.
func parseSTHeader(path string, header []byte, dataLen int64) (map[string]*stEntry, map[string]string, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(header, &raw); err != nil {
		return nil, nil, formatErr(path, "", "safetensors header is not a JSON object: %v", err)
	}
	var meta map[string]string
	entries := make(map[string]*stEntry, len(raw))
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	sort.Strings(names) // the same file reports the same bad entry every time
	for _, name := range names {
		msg := raw[name]
		if name == "__metadata__" {
			m, err := parseSTMetadata(msg)
			if err != nil {
				return nil, nil, formatErr(path, "", "safetensors __metadata__: %v", err)
			}
			meta = m
			continue
		}
		var h stHeaderEntry
		if err := json.Unmarshal(msg, &h); err != nil {
			return nil, nil, formatErr(path, name, "header entry is malformed: %v", err)
		}
		item, ok := stItemSize[h.Dtype]
		if !ok {
			return nil, nil, formatErr(path, name, "unsupported dtype %q", h.Dtype)
		}
		if len(h.DataOffsets) != 2 {
			return nil, nil, formatErr(path, name, "data_offsets has %d values, want 2", len(h.DataOffsets))
		}
		begin, end := h.DataOffsets[0], h.DataOffsets[1]
		if begin < 0 || end < begin {
			return nil, nil, formatErr(path, name, "data_offsets [%d, %d] are not an ordered range", begin, end)
		}
		if end > dataLen {
			return nil, nil, formatErr(path, name, "data_offsets [%d, %d] point past the end of the %d-byte data section (truncated file?)",
				begin, end, dataLen)
		}
		shape := make([]int, len(h.Shape))
		numel := int64(1)
		for i, d := range h.Shape {
			if d < 0 || (d > 0 && numel > math.MaxInt64/8/d) {
				return nil, nil, formatErr(path, name, "bad shape %v", h.Shape)
			}
			numel *= d
			shape[i] = int(d)
		}
		if numel*item != end-begin {
			return nil, nil, formatErr(path, name, "shape %v of %s needs %d bytes but data_offsets [%d, %d] hold %d",
				h.Shape, h.Dtype, numel*item, begin, end, end-begin)
		}
		entries[name] = &stEntry{name: name, dtype: h.Dtype, shape: shape, begin: begin, end: end}
	}
	// No two non-empty tensors may share bytes.
	sorted := make([]*stEntry, 0, len(entries))
	for _, e := range entries {
		if e.end > e.begin {
			sorted = append(sorted, e)
		}
	}
	sort.Slice(sorted, func(i, j int) bool {
		if sorted[i].begin != sorted[j].begin {
			return sorted[i].begin < sorted[j].begin
		}
		return sorted[i].name < sorted[j].name
	})
	for i := 1; i < len(sorted); i++ {
		a, b := sorted[i-1], sorted[i]
		if b.begin < a.end {
			return nil, nil, formatErr(path, b.name, "data_offsets [%d, %d] overlap tensor %q at [%d, %d]",
				b.begin, b.end, a.name, a.begin, a.end)
		}
	}
	return entries, meta, nil
}

// parseSTMetadata accepts the string map the format specifies and, leniently,
// other JSON values, which are kept as their JSON text.
func parseSTMetadata(msg json.RawMessage) (map[string]string, error) {
	var anyMap map[string]json.RawMessage
	if err := json.Unmarshal(msg, &anyMap); err != nil {
		return nil, err
	}
	out := make(map[string]string, len(anyMap))
	for k, v := range anyMap {
		var s string
		if json.Unmarshal(v, &s) == nil {
			out[k] = s
		} else {
			out[k] = string(v)
		}
	}
	return out, nil
}

// Path is the file that was opened.
func (s *SafeTensors) Path() string { return s.path }

// Metadata is the header's __metadata__ map (nil when absent).
func (s *SafeTensors) Metadata() map[string]string { return s.metadata }

// Names lists every tensor name, sorted.
func (s *SafeTensors) Names() []string { return append([]string(nil), s.names...) }

// Stored reports the dtype string ("F16", "I64", ...) and shape a tensor has
// in the file, without reading its data.
func (s *SafeTensors) Stored(name string) (dtype string, shape []int, ok bool) {
	e, ok := s.entries[name]
	if !ok {
		return "", nil, false
	}
	return e.dtype, append([]int(nil), e.shape...), true
}

// Get returns the named tensor. F32, F16 and BF16 data alias the mapping when
// suitably aligned (else they are copied once); integer, bool and F64 buffers
// are converted to F32. Repeated calls return the same *Tensor: treat it as
// read-only, and do not use it after Close.
func (s *SafeTensors) Get(name string) (*tensor.Tensor, bool) {
	e, ok := s.entries[name]
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t, ok := s.cache[name]; ok {
		return t, true
	}
	if s.data == nil {
		return nil, false
	}
	t := decodeRaw(e.dtype, e.shape, s.data[s.base+e.begin:s.base+e.end])
	s.cache[name] = t
	return t, true
}

// Close unmaps the file. Tensors obtained from Get must not be used afterwards.
func (s *SafeTensors) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.data == nil {
		return nil
	}
	err := unmap(s.data)
	s.data = nil
	s.cache = nil
	return err
}

// decodeRaw turns little-endian bytes of a stored dtype into a Tensor,
// aliasing b for F32/F16/BF16 when it is aligned. len(b) must already match
// the shape.
func decodeRaw(dtype string, shape []int, b []byte) *tensor.Tensor {
	n := tensor.Numel(shape)
	t := &tensor.Tensor{Shape: append([]int(nil), shape...)}
	switch dtype {
	case "F16", "BF16":
		t.DType = tensor.F16
		if dtype == "BF16" {
			t.DType = tensor.BF16
		}
		if n > 0 && uintptr(unsafe.Pointer(&b[0]))%2 == 0 {
			t.Half = unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), n)
		} else {
			t.Half = make([]uint16, n)
			for i := range t.Half {
				t.Half[i] = binary.LittleEndian.Uint16(b[2*i:])
			}
		}
		return t
	case "F32":
		t.DType = tensor.F32
		if n > 0 && uintptr(unsafe.Pointer(&b[0]))%4 == 0 {
			t.F32 = unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), n)
		} else {
			t.F32 = make([]float32, n)
			for i := range t.F32 {
				t.F32[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
			}
		}
		return t
	}
	t.DType = tensor.F32
	t.F32 = make([]float32, n)
	for i := range t.F32 {
		var v float64
		switch dtype {
		case "F64":
			v = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		case "I64":
			v = float64(int64(binary.LittleEndian.Uint64(b[8*i:])))
		case "I32":
			v = float64(int32(binary.LittleEndian.Uint32(b[4*i:])))
		case "I16":
			v = float64(int16(binary.LittleEndian.Uint16(b[2*i:])))
		case "I8":
			v = float64(int8(b[i]))
		case "U8":
			v = float64(b[i])
		case "BOOL":
			if b[i] != 0 {
				v = 1
			}
		}
		t.F32[i] = float32(v)
	}
	return t
}
