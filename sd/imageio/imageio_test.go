package imageio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

func encodePNG(t *testing.T, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pixel returns the R, G, B tensor values at (x, y) of t [1, 3, H, W].
func pixel(t *tensor.Tensor, x, y int) [3]float32 {
	h, w := t.Shape[2], t.Shape[3]
	i := y*w + x
	return [3]float32{t.F32[i], t.F32[h*w+i], t.F32[2*h*w+i]}
}

func near(a, b [3]float32) bool {
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > 1e-6 {
			return false
		}
	}
	return true
}

func TestDecodeKinds(t *testing.T) {
	rgb := image.NewRGBA(image.Rect(0, 0, 3, 2))
	for i := 3; i < len(rgb.Pix); i += 4 {
		rgb.Pix[i] = 255 // opaque: encoded as 8-bit RGB
	}
	rgb.SetRGBA(1, 0, color.RGBA{10, 20, 30, 255})
	nrgba := image.NewNRGBA(image.Rect(0, 0, 3, 2))
	nrgba.SetNRGBA(1, 0, color.NRGBA{10, 20, 30, 7}) // alpha dropped: straight colour kept
	gray := image.NewGray(image.Rect(0, 0, 3, 2))
	gray.SetGray(1, 0, color.Gray{51})
	gray16 := image.NewGray16(image.Rect(0, 0, 3, 2))
	gray16.SetGray16(1, 0, color.Gray16{13107}) // 0.2
	rgb16 := image.NewRGBA64(image.Rect(0, 0, 3, 2))
	for i := 6; i < len(rgb16.Pix); i += 8 {
		rgb16.Pix[i], rgb16.Pix[i+1] = 0xff, 0xff // opaque: encoded as 16-bit RGB
	}
	rgb16.SetRGBA64(1, 0, color.RGBA64{13107, 26214, 65535, 65535})
	pal := image.NewPaletted(image.Rect(0, 0, 3, 2), color.Palette{
		color.RGBA{0, 0, 0, 255}, color.RGBA{10, 20, 30, 255}, color.NRGBA{200, 100, 50, 0}})
	pal.SetColorIndex(1, 0, 1)
	pal.SetColorIndex(2, 1, 2)

	cases := []struct {
		name   string
		img    image.Image
		want   [3]float32 // at (1, 0)
		wantIn string     // decoded Go type
	}{
		{"rgb", rgb, [3]float32{10. / 255, 20. / 255, 30. / 255}, "*image.RGBA"},
		{"rgba", nrgba, [3]float32{10. / 255, 20. / 255, 30. / 255}, "*image.NRGBA"},
		{"gray", gray, [3]float32{0.2, 0.2, 0.2}, "*image.Gray"},
		{"gray16", gray16, [3]float32{0.2, 0.2, 0.2}, "*image.Gray16"},
		{"rgb16", rgb16, [3]float32{0.2, 0.4, 1}, "*image.RGBA64"},
		{"palette", pal, [3]float32{10. / 255, 20. / 255, 30. / 255}, "*image.Paletted"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			img, err := Decode(bytes.NewReader(encodePNG(t, c.img)), c.name+".png")
			if err != nil {
				t.Fatal(err)
			}
			if got := typeName(img); got != c.wantIn {
				t.Errorf("decoded to %s, want %s", got, c.wantIn)
			}
			x := ToTensor(img)
			if !tensor.SameShape(x.Shape, []int{1, 3, 2, 3}) {
				t.Fatalf("shape %v", x.Shape)
			}
			if got := pixel(x, 1, 0); !near(got, c.want) {
				t.Errorf("pixel (1,0) = %v, want %v", got, c.want)
			}
			if got := pixel(x, 0, 1); !near(got, [3]float32{}) {
				t.Errorf("pixel (0,1) = %v, want black", got)
			}
		})
	}
	// The transparent palette entry keeps its colour.
	img, _ := Decode(bytes.NewReader(encodePNG(t, pal)), "p.png")
	if got, want := pixel(ToTensor(img), 2, 1), [3]float32{200. / 255, 100. / 255, 50. / 255}; !near(got, want) {
		t.Errorf("transparent palette pixel = %v, want %v", got, want)
	}
}

func typeName(v any) string {
	switch v.(type) {
	case *image.RGBA:
		return "*image.RGBA"
	case *image.NRGBA:
		return "*image.NRGBA"
	case *image.Gray:
		return "*image.Gray"
	case *image.Gray16:
		return "*image.Gray16"
	case *image.Paletted:
		return "*image.Paletted"
	case *image.YCbCr:
		return "*image.YCbCr"
	case *image.RGBA64:
		return "*image.RGBA64"
	}
	return "other"
}

func TestDecodeJPEG(t *testing.T) {
	src := image.NewRGBA(image.Rect(0, 0, 16, 16))
	for i := range src.Pix {
		src.Pix[i] = 255
	}
	for y := 0; y < 16; y++ {
		for x := 0; x < 8; x++ {
			src.SetRGBA(x, y, color.RGBA{200, 40, 40, 255})
		}
	}
	var b bytes.Buffer
	if err := jpeg.Encode(&b, src, &jpeg.Options{Quality: 100}); err != nil {
		t.Fatal(err)
	}
	img, err := Decode(&b, "x.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if typeName(img) != "*image.YCbCr" {
		t.Fatalf("decoded to %s", typeName(img))
	}
	x := ToTensor(img)
	// JPEG is lossy; quality 100 keeps flat areas within a few levels.
	for _, c := range []struct {
		x, y int
		want [3]float32
	}{{2, 8, [3]float32{200. / 255, 40. / 255, 40. / 255}}, {13, 8, [3]float32{1, 1, 1}}} {
		got := pixel(x, c.x, c.y)
		for i := range got {
			if math.Abs(float64(got[i]-c.want[i])) > 4./255 {
				t.Errorf("pixel (%d,%d) = %v, want about %v", c.x, c.y, got, c.want)
			}
		}
	}
	// Gray JPEG.
	g := image.NewGray(image.Rect(0, 0, 8, 8))
	for i := range g.Pix {
		g.Pix[i] = 128
	}
	b.Reset()
	if err := jpeg.Encode(&b, g, &jpeg.Options{Quality: 100}); err != nil {
		t.Fatal(err)
	}
	img, err = Decode(&b, "g.jpg")
	if err != nil {
		t.Fatal(err)
	}
	if got := pixel(ToTensor(img), 3, 3); math.Abs(float64(got[0])-128./255) > 1.5/255 || got[0] != got[1] || got[1] != got[2] {
		t.Errorf("gray JPEG pixel = %v, want three equal values near 128/255", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	good := encodePNG(t, image.NewGray(image.Rect(0, 0, 4, 4)))
	corrupt := append([]byte(nil), good...)
	corrupt[len(corrupt)-20] ^= 0xff     // inside IDAT: CRC or zlib failure
	huge := append([]byte(nil), good...) // IHDR claims 100000x100000
	binary.BigEndian.PutUint32(huge[16:], 100000)
	binary.BigEndian.PutUint32(huge[20:], 100000)
	binary.BigEndian.PutUint32(huge[29:], crc32.ChecksumIEEE(huge[12:29]))
	for _, c := range []struct {
		name, data, want string
	}{
		{"corrupt.png", string(corrupt), "corrupt.png: cannot decode PNG"},
		{"trunc.png", string(good[:30]), "trunc.png: cannot decode PNG"},
		{"bad.jpg", "\xff\xd8\xff\xe0garbage", "bad.jpg: cannot decode JPEG"},
		{"text.png", "hello world", "text.png: not a PNG or JPEG file"},
		{"empty.png", "", "empty.png: empty file"},
		{"huge.png", string(huge), "huge.png: PNG of 100000x100000 is larger than"},
	} {
		_, err := Decode(strings.NewReader(c.data), c.name)
		if err == nil || !strings.Contains(err.Error(), c.want) || !errors.Is(err, ErrFormat) {
			t.Errorf("%s: error %v, want one containing %q matching ErrFormat", c.name, err, c.want)
		}
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.png")); err == nil || !strings.Contains(err.Error(), "missing.png") {
		t.Errorf("missing file: %v", err)
	}
}

func TestCropMultiple(t *testing.T) {
	src := image.NewPaletted(image.Rect(0, 0, 992, 663), color.Palette{color.Black, color.White})
	src.SetColorIndex(991, 655, 1) // last kept pixel
	src.SetColorIndex(0, 656, 1)   // first dropped row
	img, err := CropMultiple(src, 8)
	if err != nil {
		t.Fatal(err)
	}
	if b := img.Bounds(); b != image.Rect(0, 0, 992, 656) {
		t.Fatalf("cropped to %v, want 992x656 from the top left", b)
	}
	x := ToTensor(img)
	if !tensor.SameShape(x.Shape, []int{1, 3, 656, 992}) {
		t.Fatalf("tensor shape %v", x.Shape)
	}
	if pixel(x, 991, 655)[0] != 1 || pixel(x, 0, 655)[0] != 0 {
		t.Errorf("crop kept the wrong pixels")
	}
	// A sub-image with a non-zero origin keeps its top-left corner.
	sub := image.NewGray(image.Rect(0, 0, 30, 30)).SubImage(image.Rect(5, 7, 25, 26))
	img, err = CropMultiple(sub, 8)
	if err != nil || img.Bounds() != image.Rect(5, 7, 21, 23) {
		t.Errorf("offset crop = %v, %v; want (5,7)-(21,23)", img.Bounds(), err)
	}
	if _, err := CropMultiple(image.NewGray(image.Rect(0, 0, 7, 100)), 8); err == nil {
		t.Error("7-pixel-wide image cropped to a multiple of 8 without error")
	}
}

func TestFromTensor(t *testing.T) {
	x := tensor.FromF32([]float32{
		-0.5, 0.5, // R
		0.2, 1.5, // G
		float32(math.NaN()), 0.998, // B
	}, 1, 3, 1, 2)
	img, err := FromTensor(x)
	if err != nil {
		t.Fatal(err)
	}
	want := []uint8{0, 51, 0, 255, 128, 255, 254, 255} // round(0.5*255)=128, round(0.998*255)=254
	if !bytes.Equal(img.Pix, want) {
		t.Errorf("pixels %v, want %v", img.Pix, want)
	}
	if _, err := FromTensor(tensor.New(1, 4, 2, 2)); err == nil {
		t.Error("4-channel tensor accepted")
	}
	// Round trip of every 8-bit level.
	src := image.NewGray(image.Rect(0, 0, 256, 1))
	for i := range src.Pix {
		src.Pix[i] = uint8(i)
	}
	back, _ := FromTensor(ToTensor(src))
	if p, _ := PSNR(src, back); !math.IsInf(p, 1) {
		t.Errorf("8-bit round trip not exact: PSNR %v", p)
	}
}

func TestPSNR(t *testing.T) {
	a := image.NewRGBA(image.Rect(0, 0, 2, 2))
	b := image.NewRGBA(image.Rect(0, 0, 2, 2))
	for i := 3; i < len(a.Pix); i += 4 {
		a.Pix[i], b.Pix[i] = 255, 255
	}
	b.Pix[0] = 12 // one sample of 12 differs: MSE = 144/12 = 12
	p, err := PSNR(a, b)
	if err != nil {
		t.Fatal(err)
	}
	if want := 10 * math.Log10(255*255/12.0); math.Abs(p-want) > 1e-12 || math.Abs(p-37.3390) > 1e-3 {
		t.Errorf("PSNR = %v, want %v", p, want)
	}
	// Gray against RGB: the gray value is replicated to three channels.
	g := image.NewGray(image.Rect(0, 0, 2, 2))
	if p, _ := PSNR(g, a); !math.IsInf(p, 1) {
		t.Errorf("black gray vs black RGB: PSNR %v, want +Inf", p)
	}
	g.Pix[0] = 255 // 3 of 12 samples differ by 255: MSE = 255²/4 -> 6.0206 dB
	if p, _ := PSNR(g, a); math.Abs(p-10*math.Log10(4)) > 1e-9 {
		t.Errorf("PSNR = %v, want 6.0206", p)
	}
	if _, err := PSNR(a, image.NewRGBA(image.Rect(0, 0, 2, 3))); err == nil {
		t.Error("PSNR of different sizes accepted")
	}
}

func TestTextChunks(t *testing.T) {
	img := image.NewGray(image.Rect(0, 0, 4, 4))
	img.Pix[5] = 99
	params := "a photo of a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 4x4"
	text := []TextChunk{{"parameters", params}, {"Comment", "café"}, {"unicode", "猫 – ü"}}
	var b bytes.Buffer
	if err := EncodePNG(&b, img, text...); err != nil {
		t.Fatal(err)
	}
	data := b.Bytes()
	got, err := ReadText(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(text) {
		t.Fatalf("read %d text chunks, want %d: %q", len(got), len(text), got)
	}
	for i := range text {
		if got[i] != text[i] {
			t.Errorf("chunk %d = %q, want %q", i, got[i], text[i])
		}
	}
	// Latin-1 goes in tEXt (as one byte per character), other text in iTXt.
	if !bytes.Contains(data, []byte("tEXtparameters\x00a photo")) || !bytes.Contains(data, []byte("tEXtComment\x00caf\xe9")) ||
		!bytes.Contains(data, []byte("iTXtunicode\x00\x00\x00\x00\x00")) {
		t.Error("text chunks not encoded as tEXt/iTXt")
	}
	// Text comes before the image data, which still decodes.
	if bytes.Index(data, []byte("tEXt")) > bytes.Index(data, []byte("IDAT")) {
		t.Error("tEXt after IDAT")
	}
	back, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("PNG with text chunks does not decode: %v", err)
	}
	if p, _ := PSNR(img, back); !math.IsInf(p, 1) {
		t.Error("pixels changed")
	}
	// A flipped bit in a text chunk is caught by its CRC.
	i := bytes.Index(data, []byte("a photo"))
	bad := append([]byte(nil), data...)
	bad[i] ^= 1
	if _, err := ReadText(bytes.NewReader(bad)); err == nil || !strings.Contains(err.Error(), "bad CRC") {
		t.Errorf("corrupt text chunk: %v", err)
	}
	for _, k := range []string{"", strings.Repeat("k", 80), "a\x00b", "猫"} {
		if err := EncodePNG(&b, img, TextChunk{k, "v"}); err == nil {
			t.Errorf("key %q accepted", k)
		}
	}
}

func TestWritePNG(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "out.png")
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	img.Pix[0], img.Pix[3] = 77, 255
	if err := WritePNG(path, img, TextChunk{"parameters", "Steps: 1"}); err != nil {
		t.Fatal(err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if c := back.At(0, 0).(color.NRGBA); c.R != 77 {
		t.Errorf("read back %v", c)
	}
	f, _ := os.Open(path)
	txt, err := ReadText(f)
	f.Close()
	if err != nil || len(txt) != 1 || txt[0].Value != "Steps: 1" {
		t.Errorf("text read back %q, %v", txt, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v", st.Mode())
	}

	// Failures leave neither the target nor a temporary file behind, and do
	// not touch an existing file.
	bad := filepath.Join(dir, "bad.png")
	if err := WritePNG(bad, image.NewRGBA(image.Rect(0, 0, 0, 0))); err == nil {
		t.Error("empty image written")
	}
	if err := WritePNG(bad, img, TextChunk{"", "x"}); err == nil {
		t.Error("empty key written")
	}
	if err := WritePNG(path, img, TextChunk{"bad\x00key", "x"}); err == nil {
		t.Error("NUL key written")
	}
	if err := WritePNG(filepath.Join(dir, "nodir", "x.png"), img); err == nil {
		t.Error("write into a missing folder succeeded")
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "out.png" {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Errorf("folder holds %v, want only out.png", names)
	}
	if txt, _ := readTextFile(path); len(txt) != 1 || txt[0].Value != "Steps: 1" {
		t.Error("failed write changed the existing file")
	}
}

func readTextFile(path string) ([]TextChunk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadText(f)
}

func TestRealImages(t *testing.T) {
	cases := []struct {
		file string
		w, h int // after cropping to a multiple of 8
	}{
		{"clic_flower.png", 992, 656},
		{"kodim01.png", 768, 512},
		{"kodim03-gray256.png", 256, 256},
	}
	for _, c := range cases {
		path := filepath.Join("..", "..", "..", "shared", "images", c.file)
		if _, err := os.Stat(path); err != nil {
			t.Skipf("shared images not present: %v", err)
		}
		img, err := Load(path)
		if err != nil {
			t.Fatal(err)
		}
		img, err = CropMultiple(img, 8)
		if err != nil {
			t.Fatal(err)
		}
		if b := img.Bounds(); b.Dx() != c.w || b.Dy() != c.h {
			t.Errorf("%s: %dx%d, want %dx%d", c.file, b.Dx(), b.Dy(), c.w, c.h)
		}
		out, _ := FromTensor(ToTensor(img))
		if p, _ := PSNR(img, out); !math.IsInf(p, 1) {
			t.Errorf("%s: tensor round trip changed pixels (PSNR %v)", c.file, p)
		}
	}
}
