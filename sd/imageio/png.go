package imageio

import (
	"bytes"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"unicode/utf8"
)

// TextChunk is one PNG text entry. AUTOMATIC1111 stores the generation
// settings under the key "parameters".
type TextChunk struct {
	Key   string
	Value string
}

// EncodePNG writes img as a PNG to w with the given text entries placed
// before the image data. An entry whose value is Latin-1 goes in a tEXt
// chunk; any other value goes, UTF-8 encoded, in an uncompressed iTXt chunk
// (the same rule PIL follows, so either reads back as the same string).
// Keys must be 1 to 79 Latin-1 characters without NUL.
func EncodePNG(w io.Writer, img image.Image, text ...TextChunk) error {
	chunks := make([][]byte, 0, len(text))
	for _, t := range text {
		c, err := textChunk(t)
		if err != nil {
			return err
		}
		chunks = append(chunks, c)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return fmt.Errorf("imageio: encode PNG: %w", err)
	}
	data := buf.Bytes()
	at, err := firstIDAT(data)
	if err != nil {
		return err
	}
	parts := append(append([][]byte{data[:at]}, chunks...), data[at:])
	for _, p := range parts {
		if _, err := w.Write(p); err != nil {
			return err
		}
	}
	return nil
}

// firstIDAT returns the offset of the first IDAT chunk in an encoded PNG.
func firstIDAT(data []byte) (int, error) {
	for off := len(pngMagic); off+8 <= len(data); {
		n := int(binary.BigEndian.Uint32(data[off:]))
		if string(data[off+4:off+8]) == "IDAT" {
			return off, nil
		}
		off += 12 + n
	}
	return 0, errors.New("imageio: encoded PNG has no IDAT chunk")
}

// latin1 returns s encoded as ISO 8859-1, or false when s has other characters.
func latin1(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xff || r == utf8.RuneError {
			return nil, false
		}
		out = append(out, byte(r))
	}
	return out, true
}

// textChunk builds the complete tEXt or iTXt chunk (length, type, data, CRC).
func textChunk(t TextChunk) ([]byte, error) {
	key, ok := latin1(t.Key)
	if !ok || len(key) == 0 || len(key) > 79 || bytes.IndexByte(key, 0) >= 0 {
		return nil, fmt.Errorf("imageio: PNG text key %q must be 1 to 79 Latin-1 characters without NUL", t.Key)
	}
	var typ string
	var body []byte
	if val, ok := latin1(t.Value); ok {
		typ = "tEXt"
		body = append(append(append(body, key...), 0), val...)
	} else {
		if !utf8.ValidString(t.Value) {
			return nil, fmt.Errorf("imageio: PNG text %q: value is not valid UTF-8", t.Key)
		}
		typ = "iTXt" // key, NUL, compression flag 0, method 0, empty language, NUL, empty translated key, NUL, text
		body = append(append(append(body, key...), 0, 0, 0, 0, 0), t.Value...)
	}
	return chunk(typ, body), nil
}

// chunk frames data as a PNG chunk: big-endian length, type, data, CRC-32 of type+data.
func chunk(typ string, data []byte) []byte {
	out := make([]byte, 0, 12+len(data))
	out = binary.BigEndian.AppendUint32(out, uint32(len(data)))
	out = append(append(out, typ...), data...)
	return binary.BigEndian.AppendUint32(out, crc32.ChecksumIEEE(out[4:]))
}

// WritePNG writes img with its text entries to path atomically: the PNG is
// written to a temporary file in the same folder, synced, and renamed over
// path, so path never holds a partial image. On error the temporary file is
// removed and path is untouched. The file gets mode 0644.
func WritePNG(path string, img image.Image, text ...TextChunk) (err error) {
	var buf bytes.Buffer
	if err := EncodePNG(&buf, img, text...); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(buf.Bytes()); err != nil {
		return err
	}
	if err = f.Chmod(0o644); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadText returns the text entries of a PNG stream in file order: tEXt
// (Latin-1, returned as UTF-8), zTXt and iTXt (compressed or not). It checks
// each chunk's CRC and stops at IEND without decoding the image.
func ReadText(r io.Reader) ([]TextChunk, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	if !bytes.HasPrefix(data, pngMagic) {
		return nil, &FormatError{Name: "png", Msg: "not a PNG stream"}
	}
	var out []TextChunk
	for off := len(pngMagic); ; {
		if off+12 > len(data) {
			return nil, &FormatError{Name: "png", Msg: "truncated chunk (no IEND)"}
		}
		n := int(binary.BigEndian.Uint32(data[off:]))
		if n < 0 || off+12+n > len(data) {
			return nil, &FormatError{Name: "png", Msg: fmt.Sprintf("chunk at byte %d runs past the end", off)}
		}
		typ := string(data[off+4 : off+8])
		body := data[off+8 : off+8+n]
		if crc32.ChecksumIEEE(data[off+4:off+8+n]) != binary.BigEndian.Uint32(data[off+8+n:]) {
			return nil, &FormatError{Name: "png", Msg: fmt.Sprintf("chunk %q at byte %d has a bad CRC", typ, off)}
		}
		off += 12 + n
		var t TextChunk
		var ok bool
		switch typ {
		case "IEND":
			return out, nil
		case "tEXt", "zTXt", "iTXt":
			if t, ok, err = parseText(typ, body); err != nil {
				return nil, err
			}
		}
		if ok {
			out = append(out, t)
		}
	}
}

// parseText decodes the body of a tEXt, zTXt or iTXt chunk.
func parseText(typ string, body []byte) (TextChunk, bool, error) {
	bad := func(msg string) (TextChunk, bool, error) {
		return TextChunk{}, false, &FormatError{Name: "png", Msg: typ + " chunk: " + msg}
	}
	k := bytes.IndexByte(body, 0)
	if k <= 0 {
		return bad("missing key")
	}
	key, rest := fromLatin1(body[:k]), body[k+1:]
	switch typ {
	case "tEXt":
		return TextChunk{key, fromLatin1(rest)}, true, nil
	case "zTXt":
		if len(rest) < 1 || rest[0] != 0 {
			return bad("unknown compression method")
		}
		v, err := inflate(rest[1:])
		if err != nil {
			return bad(err.Error())
		}
		return TextChunk{key, fromLatin1(v)}, true, nil
	}
	// iTXt: compression flag, method, language NUL, translated key NUL, text.
	if len(rest) < 2 {
		return bad("truncated")
	}
	flag, rest := rest[0], rest[2:]
	for range 2 {
		i := bytes.IndexByte(rest, 0)
		if i < 0 {
			return bad("truncated")
		}
		rest = rest[i+1:]
	}
	if flag == 1 {
		v, err := inflate(rest)
		if err != nil {
			return bad(err.Error())
		}
		rest = v
	}
	if !utf8.Valid(rest) {
		return bad("text is not UTF-8")
	}
	return TextChunk{key, string(rest)}, true, nil
}

func fromLatin1(b []byte) string {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r)
}

func inflate(b []byte) ([]byte, error) {
	zr, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	return io.ReadAll(io.LimitReader(zr, 64<<20))
}
