// Package ckpt reads and writes Stable Diffusion checkpoints: single-file
// safetensors (memory-mapped), PyTorch zip archives (.ckpt, .pth) through a
// restricted unpickler that only builds tensors and never runs code, and
// diffusers folders. Whatever the layout, an opened Checkpoint is a
// tensor.Source whose names follow the original single-file (ldm) layout,
// e.g. "model.diffusion_model.input_blocks.0.0.weight".
//
// Byte order: every format read here is little-endian, and tensors alias the
// file mapping on the little-endian hosts gosd supports (amd64, arm64).
package ckpt

import (
	"errors"
	"fmt"
)

// ErrFormat is matched (errors.Is) by every error about malformed or
// unsupported file contents.
var ErrFormat = errors.New("bad checkpoint")

// FormatError describes a problem with a checkpoint file's contents.
type FormatError struct {
	Path   string // file (or folder) that was read
	Tensor string // tensor concerned, if any
	Msg    string // what is wrong
}

func (e *FormatError) Error() string {
	if e.Tensor != "" {
		return fmt.Sprintf("%s: tensor %q: %s", e.Path, e.Tensor, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Path, e.Msg)
}

// Is makes errors.Is(err, ErrFormat) true.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

func formatErr(path, tensor, format string, args ...any) error {
	return &FormatError{Path: path, Tensor: tensor, Msg: fmt.Sprintf(format, args...)}
}
