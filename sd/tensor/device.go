package tensor

import (
	"fmt"
	"math/bits"
)

// Device-resident activations. A backend whose kernels run on a device with
// memory of its own (the CUDA backend) implements DeviceBackend; a tensor it
// allocates keeps its elements in that memory (Tensor.Dev) and has no host
// slices. Model code reaches it through two calls only:
//
//   - a model's entry point wraps its backend with OnDevice, converts its
//     inputs once with Upload and its result once with Download, and
//   - every layer allocates its destinations with EmptyOn(be, ...) and hands
//     intermediates back with Release, as it does for host activations.
//
// Between those two calls every intermediate stays on the device, so a UNet
// evaluation makes no host round trip and waits for the device only in
// Download. Backends without device memory (CPU, Ref) are unaffected: OnDevice
// returns them unchanged and EmptyOn takes host buffers from the pool.

// Storage is memory a DeviceBackend owns that holds the elements of a tensor.
type Storage interface {
	// Owner is the backend whose memory holds the elements.
	Owner() DeviceBackend
	// Free hands the memory back to its owner. A second call does nothing;
	// tensors that share the storage (Reshape) must not be used afterwards.
	Free()
}

// DeviceBackend is a Backend with memory of its own. Its methods accept host
// tensors (uploading them per call, as before) and F32 tensors whose Dev it
// owns; a tensor owned by another backend is an ErrBackend OpError.
type DeviceBackend interface {
	Backend
	// Alloc returns an F32 tensor in device memory with unspecified contents.
	Alloc(shape ...int) (*Tensor, error)
	// ToDevice copies an F32 host tensor into a new device tensor.
	ToDevice(t *Tensor) (*Tensor, error)
	// ToHost copies the elements of the device tensor t into dst
	// (len(dst) == t.Numel()) once the work queued before it has finished.
	ToHost(dst []float32, t *Tensor) error
}

// WeightPrefetcher is a backend that can copy weights into its device
// memory ahead of their first use, overlapping the copies with its work.
type WeightPrefetcher interface {
	PrefetchWeights(ws []*Tensor) error
}

// PrefetchWeights hands ws to the WeightPrefetcher in be (or in the backend
// it wraps); it does nothing for other backends.
func PrefetchWeights(be Backend, ws []*Tensor) error {
	if p, ok := backendAs[WeightPrefetcher](be); ok {
		return p.PrefetchWeights(ws)
	}
	return nil
}

// OnDevice returns the backend through which a model keeps its activations
// in be's device memory: be itself when be (or the backend it wraps, for a
// Profile) is not a DeviceBackend.
func OnDevice(be Backend) Backend {
	if _, ok := be.(deviceScope); ok {
		return be
	}
	if d, ok := backendAs[DeviceBackend](be); ok {
		return deviceScope{Backend: be, dev: d}
	}
	return be
}

// backendAs finds a T among be and the backends it wraps (Unwrap), outermost
// first.
func backendAs[T any](be Backend) (T, bool) {
	for be != nil {
		if t, ok := be.(T); ok {
			return t, true
		}
		u, ok := be.(interface{ Unwrap() Backend })
		if !ok {
			break
		}
		be = u.Unwrap()
	}
	var zero T
	return zero, false
}

// deviceScope runs every op on the wrapped backend (a Profile keeps
// counting) and marks, for EmptyOn, that activations belong on dev.
type deviceScope struct {
	Backend
	dev DeviceBackend
}

func (s deviceScope) Unwrap() Backend { return s.Backend }

// EmptyOn returns an F32 tensor of the given shape with unspecified
// contents, in device memory when be comes from OnDevice with a device
// behind it, else from the host pool (Empty). A failed device allocation
// panics through Must, which the model's entry point turns into its error.
func EmptyOn(be Backend, shape ...int) *Tensor {
	if s, ok := be.(deviceScope); ok {
		t, err := s.dev.Alloc(shape...)
		Must(err)
		return t
	}
	return Empty(shape...)
}

// Upload returns t in the device memory behind be (a new tensor the caller
// releases) when be comes from OnDevice, else t itself; nil stays nil. It
// lets a model move an input that many ops read (the latents, the text
// context) across once instead of once per op.
func Upload(be Backend, t *Tensor) (*Tensor, error) {
	s, ok := be.(deviceScope)
	if !ok || t == nil || t.Dev != nil {
		return t, nil
	}
	if t.DType != F32 || len(t.F32) != t.Numel() {
		return nil, &OpError{Op: "upload", Shapes: [][]int{t.Shape}, DType: t.DType, Err: ErrDType,
			Detail: "activations must be f32"}
	}
	return s.dev.ToDevice(t)
}

// Download returns t as a host tensor from the pool and releases t when t
// lives on a device (this waits for the device); a host t comes back as it
// is.
func Download(t *Tensor) (*Tensor, error) {
	if t == nil || t.Dev == nil {
		return t, nil
	}
	h := Empty(t.Shape...)
	if err := t.Dev.Owner().ToHost(h.F32, t); err != nil {
		Release(h)
		return nil, err
	}
	Release(t)
	return h, nil
}

// ReleaseUploaded releases u, a tensor that Upload returned for the host
// tensor t, when Upload made a copy; t itself is never released.
func ReleaseUploaded(u, t *Tensor) {
	if u != nil && u != t && u.Dev != nil {
		u.Dev.Free()
	}
}

// onHost rejects device tensors in a backend that has no device memory.
func onHost(op string, ts ...*Tensor) error {
	for _, t := range ts {
		if t != nil && t.Dev != nil {
			return &OpError{Op: op, Shapes: [][]int{t.Shape}, DType: t.DType, Err: ErrBackend,
				Detail: fmt.Sprintf("tensor lives in the memory of another backend (%s)", t.Dev.Owner().Name())}
		}
	}
	return nil
}

// sizeClass is the block size a device pool serves a request of bytes from:
// at least 4 KiB, else rounded up to a quarter of the power of two below
// it (four classes per octave), so a block is at most 25% larger than asked
// and buffers are reused across similar shapes.
func sizeClass(bytes int) int {
	if bytes <= 4096 {
		return 4096
	}
	step := 1 << (bits.Len(uint(bytes-1)) - 3)
	return (bytes + step - 1) / step * step
}
