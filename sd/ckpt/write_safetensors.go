package ckpt

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"

	"github.com/gosd/gosd/sd/tensor"
)

// StoredSource is a tensor.Source that can also tell a tensor's stored dtype
// ("F32", "F16", "BF16", "I64", "I32", ...) and shape without materialising
// it. Writers use it to keep integer buffers integer and to plan a file
// before streaming the data. SafeTensors, Checkpoint and the test-model
// generator implement it.
type StoredSource interface {
	tensor.Source
	Stored(name string) (dtype string, shape []int, ok bool)
}

// WriteOptions tune the writers.
type WriteOptions struct {
	// Metadata goes into the safetensors __metadata__ map.
	Metadata map[string]string
	// Names, when set, selects which tensors to write (default: all of
	// src.Names()); the order on disk is the writer's own.
	Names []string
}

type plannedTensor struct {
	name  string
	dtype string
	shape []int
}

func (p *plannedTensor) nbytes() int64 {
	return int64(tensor.Numel(p.shape)) * stItemSize[p.dtype]
}

// planTensors lists what will be written, with stored dtypes and shapes.
func planTensors(src tensor.Source, names []string) ([]plannedTensor, error) {
	if names == nil {
		names = src.Names()
	}
	ss, _ := src.(StoredSource)
	out := make([]plannedTensor, 0, len(names))
	for _, n := range names {
		var p plannedTensor
		p.name = n
		if ss != nil {
			dt, shape, ok := ss.Stored(n)
			if !ok {
				return nil, fmt.Errorf("ckpt: write: tensor %q not in source", n)
			}
			p.dtype, p.shape = dt, shape
		} else {
			t, ok := src.Get(n)
			if !ok {
				return nil, fmt.Errorf("ckpt: write: tensor %q not in source", n)
			}
			p.dtype, p.shape = stDType(t.DType), t.Shape
		}
		switch p.dtype {
		case "F32", "F16", "BF16", "I64", "I32", "F64", "U8", "BOOL":
		default:
			return nil, fmt.Errorf("ckpt: write: tensor %q: cannot write dtype %s", n, p.dtype)
		}
		out = append(out, p)
	}
	return out, nil
}

func stDType(d tensor.DType) string {
	switch d {
	case tensor.F16:
		return "F16"
	case tensor.BF16:
		return "BF16"
	}
	return "F32"
}

// encodeTensor converts t to the little-endian bytes of dtype (t's own type
// for weights; integer buffers are rounded from F32).
func encodeTensor(name, dtype string, t *tensor.Tensor, shape []int) ([]byte, error) {
	if !tensor.SameShape(t.Shape, shape) {
		return nil, fmt.Errorf("ckpt: write: tensor %q has shape %v, planned %v", name, t.Shape, shape)
	}
	n := t.Numel()
	buf := make([]byte, int64(n)*stItemSize[dtype])
	switch dtype {
	case "F16", "BF16":
		want := tensor.F16
		if dtype == "BF16" {
			want = tensor.BF16
		}
		if t.DType == want {
			for i, h := range t.Half {
				binary.LittleEndian.PutUint16(buf[2*i:], h)
			}
			return buf, nil
		}
		for i, f := range t.Float32s() {
			h := tensor.F32ToF16(f)
			if want == tensor.BF16 {
				h = tensor.F32ToBF16(f)
			}
			binary.LittleEndian.PutUint16(buf[2*i:], h)
		}
		return buf, nil
	}
	vals := t.Float32s()
	for i, f := range vals {
		switch dtype {
		case "F32":
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(f))
		case "F64":
			binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(float64(f)))
		case "I64":
			binary.LittleEndian.PutUint64(buf[8*i:], uint64(int64(math.Round(float64(f)))))
		case "I32":
			binary.LittleEndian.PutUint32(buf[4*i:], uint32(int32(math.Round(float64(f)))))
		case "U8", "BOOL":
			buf[i] = byte(math.Round(float64(f)))
		}
	}
	return buf, nil
}

// WriteSafetensors streams the tensors of src into a safetensors file at
// path: tensors are fetched and written one at a time, so a lazy source can
// produce files larger than memory. Data order follows the Python writer
// (larger element size first, then name); the header is padded with spaces
// to a multiple of 8 bytes so every tensor is aligned. The file is written
// under a temporary name and renamed into place.
func WriteSafetensors(path string, src tensor.Source, opts WriteOptions) error {
	plan, err := planTensors(src, opts.Names)
	if err != nil {
		return err
	}
	sort.SliceStable(plan, func(i, j int) bool {
		a, b := stItemSize[plan[i].dtype], stItemSize[plan[j].dtype]
		if a != b {
			return a > b
		}
		return plan[i].name < plan[j].name
	})
	var hb strings.Builder
	hb.WriteString("{")
	first := true
	if len(opts.Metadata) > 0 {
		mb, err := json.Marshal(opts.Metadata)
		if err != nil {
			return err
		}
		hb.WriteString(`"__metadata__":`)
		hb.Write(mb)
		first = false
	}
	var off int64
	for _, p := range plan {
		shape := p.shape
		if shape == nil {
			shape = []int{}
		}
		kb, _ := json.Marshal(p.name)
		eb, _ := json.Marshal(stHeaderEntry{Dtype: p.dtype, Shape: toInt64s(shape), DataOffsets: []int64{off, off + p.nbytes()}})
		if !first {
			hb.WriteString(",")
		}
		first = false
		hb.Write(kb)
		hb.WriteString(":")
		hb.Write(eb)
		off += p.nbytes()
	}
	hb.WriteString("}")
	header := hb.String()
	if pad := len(header) % 8; pad != 0 {
		header += strings.Repeat(" ", 8-pad)
	}
	return writeAtomic(path, func(w *bufio.Writer) error {
		var lenb [8]byte
		binary.LittleEndian.PutUint64(lenb[:], uint64(len(header)))
		w.Write(lenb[:])
		w.WriteString(header)
		return encodeOrdered(src, plan, func(_ int, b []byte) error {
			_, err := w.Write(b)
			return err
		})
	})
}

// encodeOrdered fetches and encodes the planned tensors on a few goroutines
// (a lazy generator source runs in parallel this way) and hands the bytes to
// emit in plan order, with at most 2 x workers tensors in flight.
func encodeOrdered(src tensor.Source, plan []plannedTensor, emit func(i int, b []byte) error) error {
	workers := min(runtime.GOMAXPROCS(0), 8)
	type result struct {
		b   []byte
		err error
	}
	results := make([]chan result, len(plan))
	for i := range results {
		results[i] = make(chan result, 1)
	}
	jobs := make(chan int)
	quit := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(quit) // stops the feeder, which closes jobs and ends the workers
		wg.Wait()
	}()
	for k := 0; k < workers; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				p := plan[i]
				t, ok := src.Get(p.name)
				if !ok {
					results[i] <- result{err: fmt.Errorf("ckpt: write: tensor %q vanished from the source", p.name)}
					continue
				}
				b, err := encodeTensor(p.name, p.dtype, t, p.shape)
				results[i] <- result{b, err}
			}
		}()
	}
	sem := make(chan struct{}, 2*workers)
	go func() {
		defer close(jobs)
		for i := range plan {
			select {
			case sem <- struct{}{}:
			case <-quit:
				return
			}
			select {
			case jobs <- i:
			case <-quit:
				return
			}
		}
	}()
	for i := range plan {
		r := <-results[i]
		<-sem
		if r.err != nil {
			return r.err
		}
		if err := emit(i, r.b); err != nil {
			return err
		}
	}
	return nil
}

func toInt64s(s []int) []int64 {
	out := make([]int64, len(s))
	for i, d := range s {
		out[i] = int64(d)
	}
	return out
}

// writeAtomic writes through fill into path+".tmp-*" and renames it to path.
func writeAtomic(path string, fill func(w *bufio.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	w := bufio.NewWriterSize(f, 4<<20)
	if err := fill(w); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
