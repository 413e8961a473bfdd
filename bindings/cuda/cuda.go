//go:build cuda

// Package cuda is the cgo binding of libgosd_cuda (kernels/include/gosd_cuda.h):
// device memory, streams, events and one wrapper per kernel. Each wrapper
// converts its arguments, calls, and maps the status to an *Error; shapes are
// checked by the caller (sd/tensor) and again by the C side.
//
// Build the library first (make cuda-lib, or
// cmake -S kernels -B build/cuda && cmake --build build/cuda). Two link forms:
//
//   - -tags cuda: build/cuda/libgosd_cuda.a plus the toolkit's shared
//     libcudart and libcublasLt (found on the default linker path or in
//     /usr/local/cuda/lib64; add others through CGO_LDFLAGS).
//   - -tags cuda,cudashared: only build/cuda/libgosd_cuda.so. The binary then
//     has no direct CUDA dependency, so it runs against whichever
//     libgosd_cuda.so the loader finds (LD_LIBRARY_PATH), e.g. one built on
//     the GPU machine with that machine's CUDA version.
package cuda

/*
#cgo CFLAGS: -I${SRCDIR}/../../kernels/include
#cgo !cudashared LDFLAGS: ${SRCDIR}/../../build/cuda/libgosd_cuda.a -L/usr/local/cuda/lib64 -lcublasLt -lcudart -lstdc++ -lm -ldl -lpthread -lrt
#cgo cudashared LDFLAGS: -L${SRCDIR}/../../build/cuda -lgosd_cuda
#include <stdint.h>
#include "gosd_cuda.h"
// ptr turns a device address kept in Go as an integer back into a pointer.
static inline void *ptr(uintptr_t p) { return (void *)p; }
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// Status codes of the C ABI.
const (
	StatusInvalid = C.SD_CUDA_EINVAL
	StatusCUDA    = C.SD_CUDA_ECUDA
	StatusBLAS    = C.SD_CUDA_EBLAS
	StatusNoMem   = C.SD_CUDA_ENOMEM
	StatusNoDev   = C.SD_CUDA_ENODEV
)

// ErrNoDevice is wrapped by errors from a machine without a usable CUDA
// device or driver.
var ErrNoDevice = errors.New("no CUDA device")

// Error is a failed libgosd_cuda call.
type Error struct {
	Op     string // C function without the sd_cuda_ prefix
	Status int    // SD_CUDA_* status
	Msg    string // message from the C side
}

func (e *Error) Error() string {
	if strings.HasPrefix(e.Msg, e.Op) { // the C side usually names the op itself
		return fmt.Sprintf("cuda %s (status %d)", e.Msg, e.Status)
	}
	return fmt.Sprintf("cuda %s: %s (status %d)", e.Op, e.Msg, e.Status)
}

// Unwrap makes errors.Is(err, ErrNoDevice) hold for StatusNoDev.
func (e *Error) Unwrap() error {
	if e.Status == StatusNoDev {
		return ErrNoDevice
	}
	return nil
}

// DType is an element type; the values match tensor.DType.
type DType int

const (
	F32  DType = C.SD_CUDA_F32
	F16  DType = C.SD_CUDA_F16
	BF16 DType = C.SD_CUDA_BF16
)

// Ptr is a device address. The zero Ptr is NULL.
type Ptr uintptr

// v converts the address for the C side; the conversion happens in C so
// that no Go code forms an unsafe.Pointer from an integer.
func (p Ptr) v() unsafe.Pointer { return C.ptr(C.uintptr_t(p)) }

// msgBuf receives messages from the C side.
type msgBuf [512]byte

func (m *msgBuf) c() (*C.char, C.size_t) {
	return (*C.char)(unsafe.Pointer(&m[0])), C.size_t(len(m))
}

func (m *msgBuf) err(op string, rc C.int) error {
	if rc == C.SD_CUDA_OK {
		return nil
	}
	n := 0
	for n < len(m) && m[n] != 0 {
		n++
	}
	return &Error{Op: op, Status: int(rc), Msg: string(m[:n])}
}

// DeviceCount returns the number of CUDA devices; with no driver or no
// device it returns an error wrapping ErrNoDevice.
func DeviceCount() (int, error) {
	var m msgBuf
	var n C.int
	p, l := m.c()
	return int(n), m.err("device_count", C.sd_cuda_device_count(&n, p, l))
}

// SetDevice makes dev current for the calling OS thread.
func SetDevice(dev int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("set_device", C.sd_cuda_set_device(C.int(dev), p, l))
}

// Info describes a CUDA device.
type Info struct {
	Name         string
	Major, Minor int // compute capability
	TotalBytes   uint64
	FreeBytes    uint64
}

// DeviceInfo returns the name, compute capability and memory of dev.
func DeviceInfo(dev int) (Info, error) {
	var m msgBuf
	var name [256]byte
	var major, minor C.int
	var total, free C.size_t
	p, l := m.c()
	rc := C.sd_cuda_device_info(C.int(dev), (*C.char)(unsafe.Pointer(&name[0])), C.size_t(len(name)),
		&major, &minor, &total, &free, p, l)
	if err := m.err("device_info", rc); err != nil {
		return Info{}, err
	}
	n := 0
	for n < len(name) && name[n] != 0 {
		n++
	}
	return Info{Name: string(name[:n]), Major: int(major), Minor: int(minor),
		TotalBytes: uint64(total), FreeBytes: uint64(free)}, nil
}

// Versions returns the CUDA runtime and driver versions as 1000*major+10*minor.
func Versions() (runtime, driver int, err error) {
	var m msgBuf
	var r, d C.int
	p, l := m.c()
	err = m.err("runtime_version", C.sd_cuda_runtime_version(&r, &d, p, l))
	return int(r), int(d), err
}

// MemInfo returns the free and total memory of the current device.
func MemInfo() (free, total int64, err error) {
	var m msgBuf
	var f, t C.size_t
	p, l := m.c()
	err = m.err("mem_info", C.sd_cuda_mem_info(&f, &t, p, l))
	return int64(f), int64(t), err
}

// Malloc allocates bytes of device memory (the zero Ptr for 0 bytes).
func Malloc(bytes int) (Ptr, error) {
	var m msgBuf
	var ptr unsafe.Pointer
	p, l := m.c()
	if err := m.err("malloc", C.sd_cuda_malloc(&ptr, C.size_t(bytes), p, l)); err != nil {
		return 0, err
	}
	return Ptr(uintptr(ptr)), nil
}

// Free releases device memory from Malloc; freeing the zero Ptr is a no-op.
func Free(ptr Ptr) error {
	var m msgBuf
	p, l := m.c()
	return m.err("free", C.sd_cuda_free(ptr.v(), p, l))
}

// Stream is a CUDA stream; every op runs asynchronously on it.
type Stream struct {
	s C.sd_cuda_stream
}

// NewStream creates a non-blocking stream on the current device.
func NewStream() (*Stream, error) {
	var m msgBuf
	st := &Stream{}
	p, l := m.c()
	if err := m.err("stream_create", C.sd_cuda_stream_create(&st.s, p, l)); err != nil {
		return nil, err
	}
	return st, nil
}

// Close destroys the stream.
func (s *Stream) Close() error {
	var m msgBuf
	p, l := m.c()
	err := m.err("stream_destroy", C.sd_cuda_stream_destroy(s.s, p, l))
	s.s = nil
	return err
}

// Sync waits for the stream's work and reports errors of earlier kernels.
func (s *Stream) Sync() error {
	var m msgBuf
	p, l := m.c()
	return m.err("stream_sync", C.sd_cuda_stream_sync(s.s, p, l))
}

// Upload copies the bytes of src (a slice of float32 or uint16) to dst.
func (s *Stream) Upload(dst Ptr, src any) error {
	ptr, n, err := hostBytes(src)
	if err != nil || n == 0 {
		return err
	}
	var m msgBuf
	p, l := m.c()
	return m.err("memcpy_h2d", C.sd_cuda_memcpy_h2d(dst.v(), ptr, C.size_t(n), s.s, p, l))
}

// Download copies len(dst) elements from src into dst (a []float32 or
// []uint16) and waits for the copy.
func (s *Stream) Download(dst any, src Ptr) error {
	ptr, n, err := hostBytes(dst)
	if err != nil || n == 0 {
		return err
	}
	var m msgBuf
	p, l := m.c()
	return m.err("memcpy_d2h", C.sd_cuda_memcpy_d2h(ptr, src.v(), C.size_t(n), s.s, p, l))
}

// Copy copies bytes between device buffers.
func (s *Stream) Copy(dst, src Ptr, bytes int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("memcpy_d2d", C.sd_cuda_memcpy_d2d(dst.v(), src.v(), C.size_t(bytes), s.s, p, l))
}

// Memset fills bytes of dst with the byte value v.
func (s *Stream) Memset(dst Ptr, v byte, bytes int) error {
	var m msgBuf
	p, l := m.c()
	return m.err("memset", C.sd_cuda_memset(dst.v(), C.int(v), C.size_t(bytes), s.s, p, l))
}

func hostBytes(x any) (unsafe.Pointer, int, error) {
	switch v := x.(type) {
	case []float32:
		if len(v) == 0 {
			return nil, 0, nil
		}
		return unsafe.Pointer(&v[0]), 4 * len(v), nil
	case []uint16:
		if len(v) == 0 {
			return nil, 0, nil
		}
		return unsafe.Pointer(&v[0]), 2 * len(v), nil
	}
	return nil, 0, fmt.Errorf("cuda: host buffer of type %T, want []float32 or []uint16", x)
}

// Event marks a point in a stream for timing.
type Event struct{ e unsafe.Pointer }

// NewEvent creates a timing event.
func NewEvent() (*Event, error) {
	var m msgBuf
	ev := &Event{}
	p, l := m.c()
	if err := m.err("event_create", C.sd_cuda_event_create(&ev.e, p, l)); err != nil {
		return nil, err
	}
	return ev, nil
}

// Close destroys the event.
func (e *Event) Close() error {
	var m msgBuf
	p, l := m.c()
	return m.err("event_destroy", C.sd_cuda_event_destroy(e.e, p, l))
}

// Record marks the current end of stream s.
func (e *Event) Record(s *Stream) error {
	var m msgBuf
	p, l := m.c()
	return m.err("event_record", C.sd_cuda_event_record(e.e, s.s, p, l))
}

// Wait makes the work queued on s after this call start once the work
// recorded in e is done (a device-side wait; the host does not block).
func (s *Stream) Wait(e *Event) error {
	var m msgBuf
	p, l := m.c()
	return m.err("stream_wait_event", C.sd_cuda_stream_wait_event(s.s, e.e, p, l))
}

// Elapsed waits for end and returns the milliseconds between start and end.
func Elapsed(start, end *Event) (float32, error) {
	var m msgBuf
	var ms C.float
	p, l := m.c()
	err := m.err("event_elapsed", C.sd_cuda_event_elapsed(&ms, start.e, end.e, p, l))
	return float32(ms), err
}

// Blas is a cuBLASLt handle with its device workspace.
type Blas struct{ h *C.sd_cuda_blas }

// NewBlas creates a cuBLASLt handle with workspaceBytes of device workspace.
func NewBlas(workspaceBytes int) (*Blas, error) {
	var m msgBuf
	b := &Blas{}
	p, l := m.c()
	if err := m.err("blas_create", C.sd_cuda_blas_create(&b.h, C.size_t(workspaceBytes), p, l)); err != nil {
		return nil, err
	}
	return b, nil
}

// Close frees the handle and its workspace.
func (b *Blas) Close() error {
	var m msgBuf
	p, l := m.c()
	err := m.err("blas_destroy", C.sd_cuda_blas_destroy(b.h, p, l))
	b.h = nil
	return err
}
