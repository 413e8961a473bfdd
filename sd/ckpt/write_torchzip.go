package ckpt

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"strconv"

	"github.com/gosd/gosd/sd/tensor"
)

// storageClass names the torch storage type for a stored dtype.
var storageClass = map[string]string{
	"F16": "HalfStorage", "F32": "FloatStorage", "BF16": "BFloat16Storage",
	"F64": "DoubleStorage", "I64": "LongStorage", "I32": "IntStorage",
	"U8": "ByteStorage", "BOOL": "BoolStorage",
}

// WriteTorchZip writes the tensors of src as a PyTorch zip checkpoint that
// torch.load reads: archive/data.pkl (pickle protocol 2, an OrderedDict of
// _rebuild_tensor_v2 calls, each tensor with its own contiguous storage),
// archive/data/<N> (raw little-endian storages, stored uncompressed and
// 64-byte aligned like torch's own writer), archive/version and
// archive/byteorder. With wrapStateDict the dict is nested under
// "state_dict", as Lightning checkpoints (.ckpt) do.
func WriteTorchZip(path string, src tensor.Source, opts WriteOptions, wrapStateDict bool) error {
	plan, err := planTensors(src, opts.Names)
	if err != nil {
		return err
	}
	return writeAtomic(path, func(bw *bufio.Writer) error {
		cw := &countWriter{w: bw}
		zw := zip.NewWriter(cw)
		err := encodeOrdered(src, plan, func(i int, b []byte) error {
			return storeAligned(zw, cw, "archive/data/"+strconv.Itoa(i), b)
		})
		if err != nil {
			return err
		}
		if err := storeAligned(zw, cw, "archive/data.pkl", tensorDictPickle(plan, wrapStateDict)); err != nil {
			return err
		}
		if err := storeAligned(zw, cw, "archive/byteorder", []byte("little")); err != nil {
			return err
		}
		if err := storeAligned(zw, cw, "archive/version", []byte("3\n")); err != nil {
			return err
		}
		return zw.Close()
	})
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// storeAligned adds an uncompressed entry whose data starts at a multiple of
// 64 bytes, padding the local header's extra field.
func storeAligned(zw *zip.Writer, cw *countWriter, name string, data []byte) error {
	if err := zw.Flush(); err != nil {
		return err
	}
	const fixed = 30 // local file header without name and extra
	pos := cw.n + fixed + int64(len(name)) + 4
	pad := (64 - pos%64) % 64
	extra := make([]byte, 4+pad)
	binary.LittleEndian.PutUint16(extra[0:], 0x4246) // "FB", a private padding field
	binary.LittleEndian.PutUint16(extra[2:], uint16(pad))
	h := &zip.FileHeader{Name: name, Method: zip.Store, Extra: extra,
		CRC32: crc32.ChecksumIEEE(data), CompressedSize64: uint64(len(data)), UncompressedSize64: uint64(len(data))}
	w, err := zw.CreateRaw(h)
	if err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

// pickleWriter emits the protocol-2 opcodes used by tensorDictPickle.
type pickleWriter struct{ bytes.Buffer }

func (p *pickleWriter) op(b ...byte) { p.Write(b) }

func (p *pickleWriter) global(module, name string) {
	p.WriteByte('c')
	p.WriteString(module + "\n" + name + "\n")
}

func (p *pickleWriter) str(s string) {
	p.WriteByte('X')
	var n [4]byte
	binary.LittleEndian.PutUint32(n[:], uint32(len(s)))
	p.Write(n[:])
	p.WriteString(s)
}

func (p *pickleWriter) int(v int64) {
	switch {
	case v >= 0 && v < 256:
		p.op('K', byte(v))
	case v >= 0 && v < 65536:
		p.op('M', byte(v), byte(v>>8))
	case v >= -1<<31 && v < 1<<31:
		var b [4]byte
		binary.LittleEndian.PutUint32(b[:], uint32(int32(v)))
		p.op('J')
		p.Write(b[:])
	default:
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], uint64(v))
		p.op(0x8a, 8)
		p.Write(b[:])
	}
}

func (p *pickleWriter) tuple(vals []int64) {
	if len(vals) == 0 {
		p.op(')')
		return
	}
	p.op('(')
	for _, v := range vals {
		p.int(v)
	}
	p.op('t')
}

// tensorDictPickle builds data.pkl for plan; storage i is entry data/<i>.
func tensorDictPickle(plan []plannedTensor, wrapStateDict bool) []byte {
	p := &pickleWriter{}
	p.op(0x80, 2)
	if wrapStateDict {
		p.op('}', '(')
		p.str("state_dict")
	}
	p.global("collections", "OrderedDict")
	p.op(')', 'R')
	for start := 0; start < len(plan); start += 1000 {
		p.op('(')
		for i := start; i < min(start+1000, len(plan)); i++ {
			t := plan[i]
			shape := toInt64s(t.shape)
			stride := make([]int64, len(shape))
			s := int64(1)
			for d := len(shape) - 1; d >= 0; d-- {
				stride[d] = s
				s *= shape[d]
			}
			p.str(t.name)
			p.global("torch._utils", "_rebuild_tensor_v2")
			p.op('(', '(')
			p.str("storage")
			p.global("torch", storageClass[t.dtype])
			p.str(strconv.Itoa(i))
			p.str("cpu")
			p.int(int64(tensor.Numel(t.shape)))
			p.op('t', 'Q')
			p.int(0)
			p.tuple(shape)
			p.tuple(stride)
			p.op(0x89) // requires_grad False
			p.global("collections", "OrderedDict")
			p.op(')', 'R', 't', 'R')
		}
		p.op('u')
	}
	if wrapStateDict {
		p.op('u')
	}
	p.op('.')
	return p.Bytes()
}
