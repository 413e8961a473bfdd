package ckpt

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"syscall"

	"github.com/gosd/gosd/sd/tensor"
)

// fileKind is a checkpoint container format recognised from its first bytes.
type fileKind int

const (
	kindSafetensors fileKind = iota + 1
	kindZip
)

// sniffFile reads the start of path and says which reader applies, or why
// none does (empty file, Git LFS pointer, HTML page, legacy pickle, ...).
func sniffFile(path string) (fileKind, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	head := make([]byte, 512)
	n, err := io.ReadFull(f, head)
	if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	return sniffBytes(path, head[:n], st.Size())
}

// sniffBytes classifies a file from its first bytes and total size.
func sniffBytes(path string, head []byte, size int64) (fileKind, error) {
	if size == 0 {
		return 0, formatErr(path, "", "is empty (0 bytes): not a checkpoint")
	}
	if bytes.HasPrefix(head, []byte("version https://git-lfs.github.com/spec/")) {
		return 0, formatErr(path, "", "is a Git LFS pointer, not the weights: fetch the real file (git lfs pull)")
	}
	text := bytes.ToLower(bytes.TrimLeft(bytes.TrimPrefix(head, []byte("\xef\xbb\xbf")), " \t\r\n"))
	if bytes.HasPrefix(text, []byte("<!doctype html")) || bytes.HasPrefix(text, []byte("<html")) {
		return 0, formatErr(path, "", "is an HTML page, not a checkpoint (a failed download?)")
	}
	if bytes.HasPrefix(text, []byte("<?xml")) {
		return 0, formatErr(path, "", "is an XML document, not a checkpoint (a failed download?)")
	}
	if bytes.HasPrefix(head, []byte("PK\x03\x04")) || bytes.HasPrefix(head, []byte("PK\x05\x06")) {
		return kindZip, nil
	}
	if len(head) >= 2 && head[0] == 0x80 && head[1] >= 2 && head[1] <= 5 {
		return 0, formatErr(path, "", "is a legacy (non-zip) PyTorch pickle, which gosd does not read: "+
			"convert it to safetensors (or re-save it with a current torch.save)")
	}
	if len(head) >= 9 {
		// safetensors: u64 header length, then a JSON object (possibly after
		// whitespace). A length beyond the file is reported by the reader.
		body := bytes.TrimLeft(head[8:], " \t\r\n")
		if len(body) > 0 && body[0] == '{' {
			return kindSafetensors, nil
		}
	}
	if bytes.HasPrefix(text, []byte("{")) || bytes.HasPrefix(text, []byte("[")) {
		return 0, formatErr(path, "", "is a JSON text, not a checkpoint (an error response from a failed download?)")
	}
	if bytes.HasPrefix(text, []byte("<")) && bytes.Contains(text, []byte("<html")) {
		return 0, formatErr(path, "", "is an HTML page, not a checkpoint (a failed download?)")
	}
	if size < 9 {
		return 0, formatErr(path, "", "is too short (%d bytes) to be a checkpoint (truncated?)", size)
	}
	show := head
	if len(show) > 16 {
		show = show[:16]
	}
	return 0, formatErr(path, "", "unknown format (first bytes % x): expected safetensors or a PyTorch zip checkpoint", show)
}

// mapFile checks that path sniffs as kind (else the error says notKind) and
// maps the whole file read-only; the caller unmaps it with unmap.
func mapFile(path string, kind fileKind, notKind string) ([]byte, error) {
	k, err := sniffFile(path)
	if err != nil {
		return nil, err
	}
	if k != kind {
		return nil, formatErr(path, "", "%s", notKind)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if int64(int(size)) != size {
		return nil, formatErr(path, "", "file of %d bytes is too large to map on this platform", size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%s: mmap: %w", path, err)
	}
	tensor.NoteFileMapping(data, true)
	return data, nil
}

// unmap undoes mapFile.
func unmap(data []byte) error {
	tensor.NoteFileMapping(data, false)
	return syscall.Munmap(data)
}
