// Package imageio loads and saves the images gosd reads and writes: PNG and
// JPEG decoding, conversion between images and [1, 3, H, W] f32 tensors in
// [0, 1], cropping to the multiple of 8 the autoencoders need, PSNR, and
// atomic PNG writing with text chunks (the "parameters" chunk that
// AUTOMATIC1111 writes and reads).
//
// Colour conventions: every image becomes three channels, R, G, B. Gray images
// are replicated to all three. Alpha is dropped: the straight
// (non-premultiplied) colour of each pixel is kept and its opacity ignored, so
// a fully transparent pixel keeps whatever colour the file stored for it
// (formats that only store premultiplied colour give black there). 8-bit
// samples map to v/255 and 16-bit samples to v/65535.
package imageio

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"io"
	"math"
	"os"

	"github.com/gosd/gosd/sd/tensor"
)

// ErrFormat is matched (errors.Is) by every error about an image file that
// cannot be decoded or is not a supported format.
var ErrFormat = errors.New("bad image")

// FormatError reports an image that could not be decoded.
type FormatError struct {
	Name string // file name, or a caller-chosen label for in-memory data
	Msg  string // what is wrong
	Err  error  // underlying decoder error, if any
}

func (e *FormatError) Error() string {
	s := e.Name + ": " + e.Msg
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

// Is makes errors.Is(err, ErrFormat) true.
func (e *FormatError) Is(target error) bool { return target == ErrFormat }

// Unwrap returns the decoder's error.
func (e *FormatError) Unwrap() error { return e.Err }

var (
	pngMagic  = []byte("\x89PNG\r\n\x1a\n")
	jpegMagic = []byte{0xff, 0xd8, 0xff}
)

// Load reads a PNG or JPEG file (recognised by its first bytes, not its name).
// PNG may be gray, gray+alpha, RGB, RGBA or palette, at 1 to 16 bits.
func Load(path string) (image.Image, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return Decode(f, path)
}

// MaxPixels bounds the images Decode accepts (width times height), so that a
// small file claiming a huge size is refused before any pixel memory is
// allocated. 16384x16384 fits.
const MaxPixels = 1 << 28

// Decode reads a PNG or JPEG image from r; name labels errors (usually the
// file name).
func Decode(r io.Reader, name string) (image.Image, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(data) == 0 {
		return nil, &FormatError{Name: name, Msg: "empty file, not an image"}
	}
	var kind string
	var decode func(io.Reader) (image.Image, error)
	var config func(io.Reader) (image.Config, error)
	switch {
	case bytes.HasPrefix(data, pngMagic):
		kind, decode, config = "PNG", png.Decode, png.DecodeConfig
	case bytes.HasPrefix(data, jpegMagic):
		kind, decode, config = "JPEG", jpeg.Decode, jpeg.DecodeConfig
	default:
		return nil, &FormatError{Name: name, Msg: fmt.Sprintf("not a PNG or JPEG file (starts with % x)", data[:min(8, len(data))])}
	}
	cfg, err := config(bytes.NewReader(data))
	if err != nil {
		return nil, &FormatError{Name: name, Msg: "cannot decode " + kind, Err: err}
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, &FormatError{Name: name, Msg: "image has no pixels"}
	}
	if int64(cfg.Width)*int64(cfg.Height) > MaxPixels {
		return nil, &FormatError{Name: name, Msg: fmt.Sprintf("%s of %dx%d is larger than the %d-pixel limit",
			kind, cfg.Width, cfg.Height, MaxPixels)}
	}
	img, err := decode(bytes.NewReader(data))
	if err != nil {
		return nil, &FormatError{Name: name, Msg: "cannot decode " + kind, Err: err}
	}
	return img, nil
}

// CropMultiple returns the top-left part of img whose width and height are
// the largest multiples of m that fit (e.g. 992x663 -> 992x656 for m = 8).
// The right-most columns and bottom-most rows are dropped; nothing is scaled.
// It fails when a side is shorter than m. The result may share pixels with img.
func CropMultiple(img image.Image, m int) (image.Image, error) {
	if m <= 0 {
		return nil, fmt.Errorf("imageio: crop multiple %d must be positive", m)
	}
	b := img.Bounds()
	w, h := b.Dx()/m*m, b.Dy()/m*m
	if w == 0 || h == 0 {
		return nil, fmt.Errorf("imageio: image of %dx%d is smaller than %dx%d", b.Dx(), b.Dy(), m, m)
	}
	if w == b.Dx() && h == b.Dy() {
		return img, nil
	}
	r := image.Rect(b.Min.X, b.Min.Y, b.Min.X+w, b.Min.Y+h)
	if s, ok := img.(interface {
		SubImage(image.Rectangle) image.Image
	}); ok {
		return s.SubImage(r), nil
	}
	c := image.NewNRGBA64(r)
	for y := r.Min.Y; y < r.Max.Y; y++ {
		for x := r.Min.X; x < r.Max.X; x++ {
			c.Set(x, y, img.At(x, y))
		}
	}
	return c, nil
}

// ToTensor converts img to x: [1, 3, H, W] f32 in [0, 1], channels R, G, B
// (see the package comment for gray, alpha and bit depth).
func ToTensor(img image.Image) *tensor.Tensor {
	b := img.Bounds()
	w, h := b.Dx(), b.Dy()
	t := tensor.New(1, 3, h, w)
	r, g, bl := t.F32[:w*h], t.F32[w*h:2*w*h], t.F32[2*w*h:]
	const s8, s16 = 1.0 / 255, 1.0 / 65535
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := y*w + x
			px, py := b.Min.X+x, b.Min.Y+y
			switch im := img.(type) {
			case *image.Gray:
				v := float32(im.GrayAt(px, py).Y) * s8
				r[i], g[i], bl[i] = v, v, v
			case *image.Gray16:
				v := float32(im.Gray16At(px, py).Y) * s16
				r[i], g[i], bl[i] = v, v, v
			case *image.RGBA: // PNGs without alpha decode to this
				c := im.RGBAAt(px, py)
				if c.A != 255 {
					n := color.NRGBAModel.Convert(c).(color.NRGBA)
					c = color.RGBA{n.R, n.G, n.B, 255}
				}
				r[i], g[i], bl[i] = float32(c.R)*s8, float32(c.G)*s8, float32(c.B)*s8
			case *image.NRGBA:
				c := im.NRGBAAt(px, py)
				r[i], g[i], bl[i] = float32(c.R)*s8, float32(c.G)*s8, float32(c.B)*s8
			case *image.YCbCr:
				c := im.YCbCrAt(px, py)
				rr, gg, bb := color.YCbCrToRGB(c.Y, c.Cb, c.Cr)
				r[i], g[i], bl[i] = float32(rr)*s8, float32(gg)*s8, float32(bb)*s8
			case *image.Paletted:
				c := paletteNRGBA(im.Palette[im.ColorIndexAt(px, py)])
				r[i], g[i], bl[i] = float32(c.R)*s8, float32(c.G)*s8, float32(c.B)*s8
			case *image.NRGBA64:
				c := im.NRGBA64At(px, py)
				r[i], g[i], bl[i] = float32(c.R)*s16, float32(c.G)*s16, float32(c.B)*s16
			default:
				c := color.NRGBA64Model.Convert(img.At(px, py)).(color.NRGBA64)
				r[i], g[i], bl[i] = float32(c.R)*s16, float32(c.G)*s16, float32(c.B)*s16
			}
		}
	}
	return t
}

// paletteNRGBA returns the straight colour of a palette entry (PNG palettes
// decode to color.NRGBA when the file has transparency, color.RGBA otherwise).
func paletteNRGBA(c color.Color) color.NRGBA {
	if n, ok := c.(color.NRGBA); ok {
		return n
	}
	return color.NRGBAModel.Convert(c).(color.NRGBA)
}

// FromTensor converts x: [1, 3, H, W] (or [3, H, W]) f32 to an opaque 8-bit
// image; each value v becomes round(clamp(v, 0, 1)*255).
func FromTensor(t *tensor.Tensor) (*image.RGBA, error) {
	s := t.Shape
	if len(s) == 4 && s[0] == 1 {
		s = s[1:]
	}
	if len(s) != 3 || s[0] != 3 || t.DType != tensor.F32 {
		return nil, fmt.Errorf("imageio: want a [1, 3, H, W] f32 tensor, got %s", t)
	}
	h, w := s[1], s[2]
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	n := w * h
	for i := 0; i < n; i++ {
		p := img.Pix[4*i : 4*i+4 : 4*i+4]
		p[0], p[1], p[2], p[3] = to8(t.F32[i]), to8(t.F32[n+i]), to8(t.F32[2*n+i]), 255
	}
	return img, nil
}

// to8 maps [0, 1] to 0..255 with clamping and rounding half away from zero;
// NaN becomes 0.
func to8(v float32) uint8 {
	if !(v > 0) {
		return 0
	}
	if v >= 1 {
		return 255
	}
	return uint8(math.Round(float64(v) * 255))
}

// RGB8 returns the 8-bit R, G, B samples of img, row-major, 3 bytes per
// pixel, using the same conversions as ToTensor (16-bit samples are rounded).
func RGB8(img image.Image) []uint8 {
	b := img.Bounds()
	out := make([]uint8, 0, 3*b.Dx()*b.Dy())
	for y := b.Min.Y; y < b.Max.Y; y++ {
		for x := b.Min.X; x < b.Max.X; x++ {
			var r, g, bl uint8
			switch im := img.(type) {
			case *image.Gray:
				v := im.GrayAt(x, y).Y
				r, g, bl = v, v, v
			case *image.RGBA:
				c := im.RGBAAt(x, y)
				if c.A == 255 {
					r, g, bl = c.R, c.G, c.B
				} else {
					n := color.NRGBAModel.Convert(c).(color.NRGBA)
					r, g, bl = n.R, n.G, n.B
				}
			case *image.NRGBA:
				c := im.NRGBAAt(x, y)
				r, g, bl = c.R, c.G, c.B
			case *image.Paletted:
				c := paletteNRGBA(im.Palette[im.ColorIndexAt(x, y)])
				r, g, bl = c.R, c.G, c.B
			case *image.YCbCr:
				c := im.YCbCrAt(x, y)
				r, g, bl = color.YCbCrToRGB(c.Y, c.Cb, c.Cr)
			default:
				c := color.NRGBA64Model.Convert(img.At(x, y)).(color.NRGBA64)
				r, g, bl = round16(c.R), round16(c.G), round16(c.B)
			}
			out = append(out, r, g, bl)
		}
	}
	return out
}

// round16 maps a 16-bit sample to the nearest 8-bit one.
func round16(v uint16) uint8 { return uint8((uint32(v)*255 + 32767) / 65535) }

// PSNR is the peak signal-to-noise ratio of b against a in dB over their 8-bit
// R, G, B samples: 10*log10(255² / MSE), the mean taken over all three
// channels of all pixels. Identical images give +Inf. The images must have
// the same size (their origins may differ).
func PSNR(a, b image.Image) (float64, error) {
	ab, bb := a.Bounds(), b.Bounds()
	if ab.Dx() != bb.Dx() || ab.Dy() != bb.Dy() {
		return 0, fmt.Errorf("imageio: PSNR of %dx%d and %dx%d images", ab.Dx(), ab.Dy(), bb.Dx(), bb.Dy())
	}
	if ab.Empty() {
		return 0, errors.New("imageio: PSNR of empty images")
	}
	return PSNR8(RGB8(a), RGB8(b)), nil
}

// PSNR8 is PSNR over two equally long slices of 8-bit samples.
func PSNR8(a, b []uint8) float64 {
	var sum float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		sum += d * d
	}
	if sum == 0 {
		return math.Inf(1)
	}
	mse := sum / float64(len(a))
	return 10 * math.Log10(255*255/mse)
}
