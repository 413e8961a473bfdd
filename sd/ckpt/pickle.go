package ckpt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// This file is a restricted unpickler for PyTorch checkpoints. It interprets
// the pickle opcodes that torch.save emits (protocols 0-5) and builds plain Go
// values. It never imports or calls anything: GLOBAL/STACK_GLOBAL resolve
// only names from a fixed allow-list to inert markers, and REDUCE/NEWOBJ/BUILD
// on those markers are implemented here by hand (making a dict, recording a
// tensor description). Every other global is rejected by name.

// Python values produced by the unpickler:
//
//	nil (None), bool, int64, *big.Int, float64, string, []byte,
//	*pyList, pyTuple, *pyDict, pyGlobal, *storageRef, *tensorRef, *pyOpaque
type (
	pyTuple []any
	pyList  struct{ items []any }
	pyDict  struct {
		keys  []any
		vals  []any
		index map[any]int // hashable key -> position
	}
	// pyGlobal is an allowed global, resolved by name only.
	pyGlobal struct{ module, name string }
	// pyOpaque is an inert stand-in for an allowed but irrelevant object.
	pyOpaque struct{ what string }
)

// storageRef is a persistent-id reference to a zip entry data/<key>.
type storageRef struct {
	dtype string // safetensors-style dtype of the elements ("F16", "I64", ...)
	key   string
	numel int64
}

// tensorRef describes a tensor view of a storage, as _rebuild_tensor_v2 does.
type tensorRef struct {
	storage *storageRef
	offset  int64
	shape   []int
	stride  []int64
}

func newDict() *pyDict { return &pyDict{index: map[any]int{}} }

func (d *pyDict) set(k, v any) error {
	hk, err := hashKey(k)
	if err != nil {
		return err
	}
	if i, ok := d.index[hk]; ok {
		d.vals[i] = v
		return nil
	}
	d.index[hk] = len(d.keys)
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return nil
}

func (d *pyDict) get(k string) (any, bool) {
	i, ok := d.index[k]
	if !ok {
		return nil, false
	}
	return d.vals[i], true
}

// hashKey turns a Python dict key into a comparable Go value.
func hashKey(k any) (any, error) {
	switch v := k.(type) {
	case nil, bool, int64, float64, string:
		return v, nil
	case *big.Int:
		return "bigint:" + v.String(), nil
	case []byte:
		return "bytes:" + string(v), nil
	case pyTuple:
		parts := make([]string, len(v))
		for i, e := range v {
			h, err := hashKey(e)
			if err != nil {
				return nil, err
			}
			parts[i] = fmt.Sprintf("%T:%v", h, h)
		}
		return "tuple:" + strings.Join(parts, "\x00"), nil
	case pyGlobal:
		return "global:" + v.module + "." + v.name, nil
	}
	return nil, fmt.Errorf("unhashable dict key of type %T", k)
}

// storageDTypes maps the allowed torch storage classes to element dtypes.
var storageDTypes = map[string]string{
	"HalfStorage": "F16", "FloatStorage": "F32", "BFloat16Storage": "BF16",
	"DoubleStorage": "F64", "LongStorage": "I64", "IntStorage": "I32",
	"ShortStorage": "I16", "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL",
}

// allowedGlobal reports whether module.name may appear in a checkpoint.
// Besides the tensor machinery, a few names that real Stable Diffusion
// Lightning checkpoints carry in their bookkeeping are accepted as inert
// placeholders (nothing of them is ever run).
func allowedGlobal(module, name string) bool {
	switch module + "." + name {
	case "collections.OrderedDict",
		"torch._utils._rebuild_tensor_v2",
		"torch._utils._rebuild_parameter",
		"torch._utils._rebuild_parameter_with_state",
		"torch.Size",
		// inert bookkeeping found in SD 1.x Lightning checkpoints:
		"pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint",
		"numpy.core.multiarray.scalar",
		"numpy.dtype",
		"_codecs.encode":
		return true
	}
	if module == "torch" {
		_, ok := storageDTypes[name]
		return ok
	}
	return false
}

// picklePath is prefixed to unpickler errors by the caller.
var errPickleTruncated = errors.New("pickle: data ends early (truncated file?)")

type unpickler struct {
	data    []byte
	pos     int
	stack   []any
	marks   []int
	memo    map[int64]any
	persist func(pid any) (any, error)
}

const (
	maxPickleStack = 1 << 20
	maxPickleMemo  = 1 << 22
)

// unpickle runs the restricted unpickler over data and returns the result.
// persist resolves persistent ids (BINPERSID) to storages.
func unpickle(data []byte, persist func(pid any) (any, error)) (result any, err error) {
	u := &unpickler{data: data, memo: map[int64]any{}, persist: persist}
	return u.run()
}

func (u *unpickler) need(n int) ([]byte, error) {
	if n < 0 || u.pos+n > len(u.data) || u.pos+n < u.pos {
		return nil, errPickleTruncated
	}
	b := u.data[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

func (u *unpickler) line() (string, error) {
	i := bytes.IndexByte(u.data[u.pos:], '\n')
	if i < 0 {
		return "", errPickleTruncated
	}
	s := string(u.data[u.pos : u.pos+i])
	u.pos += i + 1
	return s, nil
}

func (u *unpickler) push(v any) error {
	if len(u.stack) >= maxPickleStack {
		return errors.New("pickle: stack too deep")
	}
	u.stack = append(u.stack, v)
	return nil
}

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 || (len(u.marks) > 0 && len(u.stack) <= u.marks[len(u.marks)-1]) {
		return nil, errors.New("pickle: stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 {
		return nil, errors.New("pickle: stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark removes and returns the items above the last MARK.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, errors.New("pickle: no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) memoPut(idx int64) error {
	v, err := u.top()
	if err != nil {
		return err
	}
	if len(u.memo) >= maxPickleMemo {
		return errors.New("pickle: memo too large")
	}
	u.memo[idx] = v
	return nil
}

func (u *unpickler) memoGet(idx int64) error {
	v, ok := u.memo[idx]
	if !ok {
		return fmt.Errorf("pickle: memo key %d is not defined", idx)
	}
	return u.push(v)
}

func (u *unpickler) run() (any, error) {
	for {
		b, err := u.need(1)
		if err != nil {
			return nil, err
		}
		op := b[0]
		if op == '.' { // STOP
			return u.pop()
		}
		if err := u.step(op); err != nil {
			return nil, err
		}
	}
}

func (u *unpickler) uint(n int) (uint64, error) {
	b, err := u.need(n)
	if err != nil {
		return 0, err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	return v, nil
}

// sized reads an n-byte little-endian length, then that many bytes.
func (u *unpickler) sized(n int) ([]byte, error) {
	l, err := u.uint(n)
	if err != nil {
		return nil, err
	}
	if l > uint64(len(u.data)-u.pos) {
		return nil, errPickleTruncated
	}
	return u.need(int(l))
}

func (u *unpickler) step(op byte) error {
	switch op {
	case 0x80: // PROTO
		v, err := u.uint(1)
		if err != nil {
			return err
		}
		if v > 5 {
			return fmt.Errorf("pickle: unsupported protocol %d", v)
		}
		return nil
	case 0x95: // FRAME
		_, err := u.uint(8)
		return err
	case '(': // MARK
		u.marks = append(u.marks, len(u.stack))
		if len(u.marks) > maxPickleStack {
			return errors.New("pickle: too many MARKs")
		}
		return nil
	case '0': // POP
		if len(u.marks) > 0 && len(u.stack) == u.marks[len(u.marks)-1] {
			_, err := u.popMark()
			return err
		}
		_, err := u.pop()
		return err
	case '1': // POP_MARK
		_, err := u.popMark()
		return err
	case '2': // DUP
		v, err := u.top()
		if err != nil {
			return err
		}
		return u.push(v)
	case 'N':
		return u.push(nil)
	case 0x88:
		return u.push(true)
	case 0x89:
		return u.push(false)
	case '}':
		return u.push(newDict())
	case ']':
		return u.push(&pyList{})
	case ')':
		return u.push(pyTuple{})
	case 0x8f: // EMPTY_SET: kept as a list
		return u.push(&pyList{})
	case 'd': // DICT
		items, err := u.popMark()
		if err != nil {
			return err
		}
		d := newDict()
		if err := setItems(d, items); err != nil {
			return err
		}
		return u.push(d)
	case 'l', 0x91: // LIST, FROZENSET
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.push(&pyList{items: items})
	case 't': // TUPLE
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.push(pyTuple(items))
	case 0x85, 0x86, 0x87: // TUPLE1..3
		n := int(op - 0x84)
		if len(u.stack) < n || (len(u.marks) > 0 && len(u.stack)-n < u.marks[len(u.marks)-1]) {
			return errors.New("pickle: stack underflow")
		}
		t := append(pyTuple(nil), u.stack[len(u.stack)-n:]...)
		u.stack = u.stack[:len(u.stack)-n]
		return u.push(t)
	case 's': // SETITEM
		v, err := u.pop()
		if err != nil {
			return err
		}
		k, err := u.pop()
		if err != nil {
			return err
		}
		return u.setInto([]any{k, v})
	case 'u': // SETITEMS
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.setInto(items)
	case 'a': // APPEND
		v, err := u.pop()
		if err != nil {
			return err
		}
		return u.appendInto([]any{v})
	case 'e', 0x90: // APPENDS, ADDITEMS
		items, err := u.popMark()
		if err != nil {
			return err
		}
		return u.appendInto(items)
	case 'J': // BININT
		v, err := u.uint(4)
		if err != nil {
			return err
		}
		return u.push(int64(int32(uint32(v))))
	case 'K': // BININT1
		v, err := u.uint(1)
		if err != nil {
			return err
		}
		return u.push(int64(v))
	case 'M': // BININT2
		v, err := u.uint(2)
		if err != nil {
			return err
		}
		return u.push(int64(v))
	case 0x8a: // LONG1
		b, err := u.sized(1)
		if err != nil {
			return err
		}
		return u.push(decodeLong(b))
	case 0x8b: // LONG4
		b, err := u.sized(4)
		if err != nil {
			return err
		}
		return u.push(decodeLong(b))
	case 'I', 'L': // INT, LONG (text)
		s, err := u.line()
		if err != nil {
			return err
		}
		s = strings.TrimSuffix(s, "L")
		switch s {
		case "00":
			return u.push(false)
		case "01":
			return u.push(true)
		}
		if v, err := strconv.ParseInt(s, 10, 64); err == nil {
			return u.push(v)
		}
		bi, ok := new(big.Int).SetString(s, 10)
		if !ok {
			return fmt.Errorf("pickle: bad integer %q", s)
		}
		return u.push(bi)
	case 'G': // BINFLOAT (big-endian)
		b, err := u.need(8)
		if err != nil {
			return err
		}
		return u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
	case 'F': // FLOAT (text)
		s, err := u.line()
		if err != nil {
			return err
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return fmt.Errorf("pickle: bad float %q", s)
		}
		return u.push(v)
	case 'X': // BINUNICODE
		b, err := u.sized(4)
		if err != nil {
			return err
		}
		return u.push(string(b))
	case 0x8c: // SHORT_BINUNICODE
		b, err := u.sized(1)
		if err != nil {
			return err
		}
		return u.push(string(b))
	case 0x8d: // BINUNICODE8
		b, err := u.sized(8)
		if err != nil {
			return err
		}
		return u.push(string(b))
	case 'V': // UNICODE (raw-unicode-escape text)
		s, err := u.line()
		if err != nil {
			return err
		}
		return u.push(rawUnicodeEscape(s))
	case 'T': // BINSTRING
		b, err := u.sized(4)
		if err != nil {
			return err
		}
		return u.push(string(b))
	case 'U': // SHORT_BINSTRING
		b, err := u.sized(1)
		if err != nil {
			return err
		}
		return u.push(string(b))
	case 'S': // STRING (quoted text)
		s, err := u.line()
		if err != nil {
			return err
		}
		if len(s) >= 2 && (s[0] == '\'' || s[0] == '"') && s[len(s)-1] == s[0] {
			s = s[1 : len(s)-1]
		}
		return u.push(s)
	case 'B': // BINBYTES
		b, err := u.sized(4)
		if err != nil {
			return err
		}
		return u.push(append([]byte(nil), b...))
	case 'C': // SHORT_BINBYTES
		b, err := u.sized(1)
		if err != nil {
			return err
		}
		return u.push(append([]byte(nil), b...))
	case 0x8e, 0x96: // BINBYTES8, BYTEARRAY8
		b, err := u.sized(8)
		if err != nil {
			return err
		}
		return u.push(append([]byte(nil), b...))
	case 'q': // BINPUT
		i, err := u.uint(1)
		if err != nil {
			return err
		}
		return u.memoPut(int64(i))
	case 'r': // LONG_BINPUT
		i, err := u.uint(4)
		if err != nil {
			return err
		}
		return u.memoPut(int64(i))
	case 'p': // PUT
		s, err := u.line()
		if err != nil {
			return err
		}
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("pickle: bad memo index %q", s)
		}
		return u.memoPut(i)
	case 0x94: // MEMOIZE
		return u.memoPut(int64(len(u.memo)))
	case 'h': // BINGET
		i, err := u.uint(1)
		if err != nil {
			return err
		}
		return u.memoGet(int64(i))
	case 'j': // LONG_BINGET
		i, err := u.uint(4)
		if err != nil {
			return err
		}
		return u.memoGet(int64(i))
	case 'g': // GET
		s, err := u.line()
		if err != nil {
			return err
		}
		i, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("pickle: bad memo index %q", s)
		}
		return u.memoGet(i)
	case 'c': // GLOBAL
		mod, err := u.line()
		if err != nil {
			return err
		}
		name, err := u.line()
		if err != nil {
			return err
		}
		return u.global(mod, name)
	case 0x93: // STACK_GLOBAL
		n, err := u.pop()
		if err != nil {
			return err
		}
		m, err := u.pop()
		if err != nil {
			return err
		}
		ms, ok1 := m.(string)
		ns, ok2 := n.(string)
		if !ok1 || !ok2 {
			return errors.New("pickle: STACK_GLOBAL needs two strings")
		}
		return u.global(ms, ns)
	case 'i': // INST: a global applied to the marked items
		mod, err := u.line()
		if err != nil {
			return err
		}
		name, err := u.line()
		if err != nil {
			return err
		}
		if !allowedGlobal(mod, name) {
			return notAllowed(mod, name)
		}
		args, err := u.popMark()
		if err != nil {
			return err
		}
		v, err := call(pyGlobal{mod, name}, args)
		if err != nil {
			return err
		}
		return u.push(v)
	case 'o': // OBJ
		items, err := u.popMark()
		if err != nil {
			return err
		}
		if len(items) == 0 {
			return errors.New("pickle: OBJ without a class")
		}
		v, err := call(items[0], items[1:])
		if err != nil {
			return err
		}
		return u.push(v)
	case 'R': // REDUCE
		args, err := u.pop()
		if err != nil {
			return err
		}
		fn, err := u.pop()
		if err != nil {
			return err
		}
		t, ok := args.(pyTuple)
		if !ok {
			return fmt.Errorf("pickle: REDUCE arguments are %T, not a tuple", args)
		}
		v, err := call(fn, t)
		if err != nil {
			return err
		}
		return u.push(v)
	case 0x81: // NEWOBJ
		args, err := u.pop()
		if err != nil {
			return err
		}
		cls, err := u.pop()
		if err != nil {
			return err
		}
		t, _ := args.(pyTuple)
		v, err := call(cls, t)
		if err != nil {
			return err
		}
		return u.push(v)
	case 0x92: // NEWOBJ_EX
		if _, err := u.pop(); err != nil { // kwargs
			return err
		}
		args, err := u.pop()
		if err != nil {
			return err
		}
		cls, err := u.pop()
		if err != nil {
			return err
		}
		t, _ := args.(pyTuple)
		v, err := call(cls, t)
		if err != nil {
			return err
		}
		return u.push(v)
	case 'b': // BUILD: object state (attributes such as an OrderedDict's
		// _metadata) is not needed for tensors and is dropped.
		if _, err := u.pop(); err != nil {
			return err
		}
		_, err := u.top()
		return err
	case 'Q': // BINPERSID
		pid, err := u.pop()
		if err != nil {
			return err
		}
		if u.persist == nil {
			return errors.New("pickle: persistent id without a storage resolver")
		}
		v, err := u.persist(pid)
		if err != nil {
			return err
		}
		return u.push(v)
	case 'P': // PERSID (text)
		s, err := u.line()
		if err != nil {
			return err
		}
		if u.persist == nil {
			return errors.New("pickle: persistent id without a storage resolver")
		}
		v, err := u.persist(s)
		if err != nil {
			return err
		}
		return u.push(v)
	case 0x82, 0x83, 0x84:
		return errors.New("pickle: extension-registry opcodes (EXT1/2/4) are not supported")
	case 0x97, 0x98:
		return errors.New("pickle: out-of-band buffers (protocol 5) are not supported")
	}
	return fmt.Errorf("pickle: unknown opcode 0x%02x at byte %d", op, u.pos-1)
}

func notAllowed(mod, name string) error {
	return fmt.Errorf("pickle: global %q is not allowed (only tensor checkpoints are read; nothing in a checkpoint is ever executed)",
		mod+"."+name)
}

func (u *unpickler) global(mod, name string) error {
	if !allowedGlobal(mod, name) {
		return notAllowed(mod, name)
	}
	return u.push(pyGlobal{mod, name})
}

func setItems(d *pyDict, items []any) error {
	if len(items)%2 != 0 {
		return errors.New("pickle: odd number of items for a dict")
	}
	for i := 0; i < len(items); i += 2 {
		if err := d.set(items[i], items[i+1]); err != nil {
			return fmt.Errorf("pickle: %w", err)
		}
	}
	return nil
}

func (u *unpickler) setInto(items []any) error {
	obj, err := u.top()
	if err != nil {
		return err
	}
	switch o := obj.(type) {
	case *pyDict:
		return setItems(o, items)
	case *pyOpaque:
		return nil
	}
	return fmt.Errorf("pickle: SETITEM on %T", obj)
}

func (u *unpickler) appendInto(items []any) error {
	obj, err := u.top()
	if err != nil {
		return err
	}
	switch o := obj.(type) {
	case *pyList:
		if len(o.items)+len(items) > maxPickleMemo*4 {
			return errors.New("pickle: list too long")
		}
		o.items = append(o.items, items...)
		return nil
	case *pyOpaque:
		return nil
	}
	return fmt.Errorf("pickle: APPEND on %T", obj)
}

// decodeLong decodes a little-endian two's-complement integer.
func decodeLong(b []byte) any {
	if len(b) == 0 {
		return int64(0)
	}
	if len(b) <= 8 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		if b[len(b)-1]&0x80 != 0 && len(b) < 8 {
			v |= ^uint64(0) << (8 * len(b))
		}
		return int64(v)
	}
	be := make([]byte, len(b))
	for i := range b {
		be[len(b)-1-i] = b[i]
	}
	v := new(big.Int).SetBytes(be)
	if b[len(b)-1]&0x80 != 0 {
		v.Sub(v, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	return v
}

// call applies an allowed global to arguments. Only the handful of
// constructors a tensor checkpoint needs are implemented; they build data.
func call(fn any, args []any) (any, error) {
	g, ok := fn.(pyGlobal)
	if !ok {
		if _, ok := fn.(*pyOpaque); ok {
			return &pyOpaque{what: "result of an inert call"}, nil
		}
		return nil, fmt.Errorf("pickle: cannot call a %T", fn)
	}
	switch g.module + "." + g.name {
	case "collections.OrderedDict":
		d := newDict()
		if len(args) > 0 {
			if src, ok := args[0].(*pyDict); ok {
				for i := range src.keys {
					d.set(src.keys[i], src.vals[i])
				}
			}
		}
		return d, nil
	case "torch._utils._rebuild_tensor_v2":
		return rebuildTensor(args)
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		if len(args) < 1 {
			return nil, errors.New("pickle: _rebuild_parameter without data")
		}
		return args[0], nil
	case "torch.Size":
		if len(args) == 0 {
			return pyTuple{}, nil
		}
		if t, ok := args[0].(pyTuple); ok {
			return t, nil
		}
		return nil, errors.New("pickle: torch.Size needs a tuple")
	case "_codecs.encode":
		if len(args) > 0 {
			if s, ok := args[0].(string); ok {
				return []byte(s), nil // latin-1: the pickler only emits code points < 256
			}
		}
		return []byte(nil), nil
	}
	return &pyOpaque{what: g.module + "." + g.name}, nil
}

func toInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int64:
		return x, true
	case bool:
		if x {
			return 1, true
		}
		return 0, true
	}
	return 0, false
}

func toInts(v any) ([]int64, bool) {
	t, ok := v.(pyTuple)
	if !ok {
		if l, ok := v.(*pyList); ok {
			t = l.items
		} else {
			return nil, false
		}
	}
	out := make([]int64, len(t))
	for i, e := range t {
		n, ok := toInt(e)
		if !ok {
			return nil, false
		}
		out[i] = n
	}
	return out, true
}

// rebuildTensor interprets _rebuild_tensor_v2(storage, storage_offset, size,
// stride, requires_grad, backward_hooks[, metadata]) and checks the view
// fits its storage.
func rebuildTensor(args []any) (any, error) {
	if len(args) < 4 {
		return nil, fmt.Errorf("pickle: _rebuild_tensor_v2 with %d arguments", len(args))
	}
	st, ok := args[0].(*storageRef)
	if !ok {
		return nil, fmt.Errorf("pickle: _rebuild_tensor_v2 storage is %T", args[0])
	}
	off, ok1 := toInt(args[1])
	size, ok2 := toInts(args[2])
	stride, ok3 := toInts(args[3])
	if !ok1 || !ok2 || !ok3 || len(size) != len(stride) || off < 0 {
		return nil, errors.New("pickle: _rebuild_tensor_v2 has a malformed offset, size or stride")
	}
	shape := make([]int, len(size))
	numel := int64(1)
	last := off // highest element index touched
	for i, d := range size {
		if d < 0 || (d > 0 && numel > math.MaxInt32*int64(256)/d) {
			return nil, fmt.Errorf("pickle: tensor has a bad size %v", size)
		}
		if stride[i] < 0 {
			return nil, fmt.Errorf("pickle: tensor has a negative stride %v", stride)
		}
		numel *= d
		shape[i] = int(d)
	}
	if numel > 0 {
		for i, d := range size {
			if stride[i] > 0 && d-1 > (math.MaxInt64-last)/stride[i] {
				return nil, fmt.Errorf("pickle: tensor view size %v stride %v overflows", size, stride)
			}
			last += (d - 1) * stride[i]
		}
		if numel > 16*st.numel+1<<20 {
			return nil, fmt.Errorf("pickle: tensor view of %d elements is far larger than its storage %q of %d elements",
				numel, st.key, st.numel)
		}
		if last >= st.numel {
			return nil, fmt.Errorf("pickle: tensor view (offset %d, size %v, stride %v) runs past its storage %q of %d elements",
				off, size, stride, st.key, st.numel)
		}
	}
	return &tensorRef{storage: st, offset: off, shape: shape, stride: stride}, nil
}

// rawUnicodeEscape decodes Python's raw-unicode-escape: latin-1 bytes with
// \uXXXX and \UXXXXXXXX escapes.
func rawUnicodeEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') {
			n := 4
			if s[i+1] == 'U' {
				n = 8
			}
			if i+2+n <= len(s) {
				if v, err := strconv.ParseUint(s[i+2:i+2+n], 16, 32); err == nil && v <= 0x10ffff {
					b.WriteRune(rune(v))
					i += 1 + n
					continue
				}
			}
		}
		b.WriteRune(rune(s[i]))
	}
	return b.String()
}
