package ckpt

import (
	"archive/zip"
	"bytes"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
)

const fixtures = "../../testdata/ckpt/"

func sharedPath(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join("..", "..", "..", "shared", rel)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("shared material missing: %v", err)
	}
	return p
}

// TestTorchZipTAEF2 reads the real TAEF2 weights (torch 2.x zip layout with
// 64-byte aligned storages) and checks counts, shapes and values that were
// read independently from the raw storage bytes with Python's struct module.
func TestTorchZipTAEF2(t *testing.T) {
	cases := []struct {
		file  string
		name  string
		shape []int
		first []float32
	}{
		{"taef2_encoder.pth", "0.weight", []int{64, 3, 3, 3}, []float32{-0.1405029296875, -0.06121826171875, 0.091552734375}},
		{"taef2_encoder.pth", "0.bias", []int{64}, []float32{-0.023162841796875, -0.0020160675048828125, -0.0285186767578125}},
		{"taef2_decoder.pth", "1.weight", []int{64, 32, 3, 3}, []float32{-0.0031700134, -0.003118515, -0.015792847}},
		{"taef2_decoder.pth", "1.bias", []int{64}, []float32{0.2980957, 0.4099121, 0.2166748}},
	}
	for _, c := range cases {
		z, err := OpenTorchZip(sharedPath(t, "models/taef2/"+c.file))
		if err != nil {
			t.Fatal(err)
		}
		if n := len(z.Names()); n != 79 {
			t.Errorf("%s: %d tensors, want 79", c.file, n)
		}
		w, ok := z.Get(c.name)
		if !ok || w.DType != tensor.F16 || !tensor.SameShape(w.Shape, c.shape) {
			t.Fatalf("%s %s = %v", c.file, c.name, w)
		}
		for i, want := range c.first {
			if got := w.Float32s()[i]; math.Abs(float64(got-want)) > 1e-7 {
				t.Errorf("%s %s[%d] = %v want %v", c.file, c.name, i, got, want)
			}
		}
		for _, n := range z.Names() {
			if _, err := z.Load(n); err != nil {
				t.Error(err)
			}
		}
		z.Close()
	}
}

// TestTorchZipLightningFixture reads a checkpoint written by real torch.save
// (testdata/ckpt/make_fixtures.py): nested state_dict, strided and offset
// views, shared storages, integer and bool buffers, optimizer junk.
func TestTorchZipLightningFixture(t *testing.T) {
	z, err := OpenTorchZip(fixtures + "tiny_lightning.ckpt")
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	if got := strings.Join(z.Names(), ","); got != "model.ids,model.mask,model.row2,model.scalar,model.shared,model.t,model.w16,model.w32,model.wbf" {
		t.Fatalf("names %s", got)
	}
	if z.Extra()["global_step"] != int64(123456) || z.Extra()["epoch"] != int64(7) {
		t.Errorf("extra %v", z.Extra())
	}
	base := func(i int) float32 { return float32(i) / 8 }
	check := func(name string, dt tensor.DType, shape []int, want func(i int) float32) {
		t.Helper()
		x, err := z.Load(name)
		if err != nil {
			t.Fatal(err)
		}
		if x.DType != dt || !tensor.SameShape(x.Shape, shape) {
			t.Fatalf("%s = %v, want %s %v", name, x, dt, shape)
		}
		for i, v := range x.Float32s() {
			if v != want(i) {
				t.Fatalf("%s[%d] = %v want %v", name, i, v, want(i))
			}
		}
	}
	check("model.w32", tensor.F32, []int{4, 6}, base)
	check("model.w16", tensor.F16, []int{4, 6}, func(i int) float32 { return base(i) - 1 })
	check("model.wbf", tensor.BF16, []int{4, 6}, func(i int) float32 { return base(i) * 2 })
	check("model.ids", tensor.F32, []int{1, 5}, func(i int) float32 { return float32(i) })
	check("model.mask", tensor.F32, []int{3}, func(i int) float32 { return float32(1 - i%2) })
	check("model.t", tensor.F32, []int{6, 4}, func(i int) float32 { return base(i%4*6 + i/4) }) // transpose
	check("model.row2", tensor.F32, []int{6}, func(i int) float32 { return base(12 + i) })
	check("model.shared", tensor.F32, []int{4, 6}, base)
	check("model.scalar", tensor.F32, nil, func(int) float32 { return 3.5 })
	if dt, _, _ := z.Stored("model.ids"); dt != "I64" {
		t.Errorf("ids stored as %s", dt)
	}

	p, err := OpenTorchZip(fixtures + "tiny_plain.pth")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	w, _ := p.Get("conv.weight")
	if w.DType != tensor.F16 || w.Numel() != 54 || w.Float32s()[0] != -1 || w.Float32s()[53] != 1 {
		t.Errorf("conv.weight = %v %v", w, w.Float32s())
	}
}

// zipWith builds a zip archive from name -> contents.
func zipWith(t *testing.T, entries map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, name := range []string{"archive/data.pkl", "archive/data/0", "archive/version", "other/x"} {
		b, ok := entries[name]
		if !ok {
			continue
		}
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(b)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// evilPickle is what pickle.dumps makes for an object whose __reduce__
// returns (module.name, ("echo pwned",)).
func evilPickle(module, name string, stack bool) []byte {
	p := &pickleWriter{}
	p.op(0x80, 2)
	if stack {
		p.op(0x8c, byte(len(module)))
		p.WriteString(module)
		p.op(0x8c, byte(len(name)))
		p.WriteString(name)
		p.op(0x93)
	} else {
		p.global(module, name)
	}
	p.str("echo pwned")
	p.op(0x85, 'R', '.')
	return p.Bytes()
}

func TestTorchZipBadInput(t *testing.T) {
	good := &pickleWriter{}
	good.Write(tensorDictPickle([]plannedTensor{{name: "w", dtype: "F32", shape: []int{2}}}, false))
	storage := make([]byte, 8)
	cases := []struct {
		name    string
		entries map[string][]byte
		want    string
	}{
		{"os.system", map[string][]byte{"archive/data.pkl": evilPickle("os", "system", false)}, `global "os.system" is not allowed`},
		{"posix.system", map[string][]byte{"archive/data.pkl": evilPickle("posix", "system", true)}, `global "posix.system" is not allowed`},
		{"builtins.eval", map[string][]byte{"archive/data.pkl": evilPickle("builtins", "eval", false)}, `global "builtins.eval" is not allowed`},
		{"subprocess.Popen", map[string][]byte{"archive/data.pkl": evilPickle("subprocess", "Popen", true)}, `global "subprocess.Popen" is not allowed`},
		{"missing data.pkl", map[string][]byte{"other/x": []byte("hi")}, "no <folder>/data.pkl"},
		{"storage missing", map[string][]byte{"archive/data.pkl": good.Bytes()}, "zip entry archive/data/0 is missing"},
		{"storage short", map[string][]byte{"archive/data.pkl": good.Bytes(), "archive/data/0": storage[:5]}, "holds 5 bytes"},
		{"truncated pickle", map[string][]byte{"archive/data.pkl": good.Bytes()[:40], "archive/data/0": storage}, "truncated"},
		{"not a dict", map[string][]byte{"archive/data.pkl": {0x80, 2, 'K', 5, '.'}}, "not a dict of tensors"},
		{"no tensors", map[string][]byte{"archive/data.pkl": {0x80, 2, '}', '.'}}, "no tensors found"},
		{"bad opcode", map[string][]byte{"archive/data.pkl": {0x80, 2, 0xff, '.'}}, "unknown opcode 0xff"},
		{"underflow", map[string][]byte{"archive/data.pkl": {0x80, 2, 'R', '.'}}, "stack underflow"},
		{"bad memo", map[string][]byte{"archive/data.pkl": {0x80, 2, 'h', 9, '.'}}, "memo key 9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := writeFile(t, "bad.pth", zipWith(t, c.entries))
			z, err := OpenTorchZip(p)
			if err == nil {
				z.Close()
				t.Fatal("opened a bad checkpoint")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("error %q should name the file and contain %q", err, c.want)
			}
			if !errors.Is(err, ErrFormat) {
				t.Errorf("error %q is not ErrFormat", err)
			}
		})
	}
	// The refusal message says why, in full.
	p := writeFile(t, "evil.pth", zipWith(t, map[string][]byte{"archive/data.pkl": evilPickle("os", "system", false)}))
	_, err := OpenTorchZip(p)
	if want := `pickle: global "os.system" is not allowed (only tensor checkpoints are read; nothing in a checkpoint is ever executed)`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want it to contain %q", err, want)
	}
	// A truncated zip and a legacy pickle.
	whole := zipWith(t, map[string][]byte{"archive/data.pkl": good.Bytes(), "archive/data/0": storage})
	if _, err := OpenTorchZip(writeFile(t, "cut.pth", whole[:len(whole)-30])); err == nil || !strings.Contains(err.Error(), "not a readable zip archive") {
		t.Errorf("truncated zip: %v", err)
	}
	if _, err := OpenTorchZip(writeFile(t, "legacy.pth", []byte("\x80\x02\x8a\x0alZ\xfc\x9cF\xf9 j\xa8P\x19.\x80\x02M\xe9\x03."))); err == nil || !strings.Contains(err.Error(), "convert it to safetensors") {
		t.Errorf("legacy pickle: %v", err)
	}
}

func TestTorchZipWriteRoundTrip(t *testing.T) {
	src := &storedMap{MapSource: tensor.MapSource{
		"a.w32": tensor.FromF32([]float32{1, -2.5, 3, 4, 5, 6}, 2, 3),
		"a.w16": tensor.FromHalf([]uint16{tensor.F32ToF16(0.25), tensor.F32ToF16(-7)}, tensor.F16, 2),
		"a.wbf": tensor.FromHalf([]uint16{tensor.F32ToBF16(1.5)}, tensor.BF16, 1, 1),
		"a.ids": tensor.FromF32([]float32{0, 1, 2, 300000}, 1, 4),
		"a.s":   tensor.FromF32([]float32{9}),
	}, dtypes: map[string]string{"a.ids": "I64"}}
	dir := t.TempDir()
	for _, wrap := range []bool{false, true} {
		p := filepath.Join(dir, "rt.pth")
		if err := WriteTorchZip(p, src, WriteOptions{}, wrap); err != nil {
			t.Fatal(err)
		}
		z, err := OpenTorchZip(p)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range src.Names() {
			want, _ := src.Get(n)
			got, err := z.Load(n)
			if err != nil {
				t.Fatal(err)
			}
			if got.DType != want.DType || !tensor.SameShape(got.Shape, want.Shape) {
				t.Fatalf("%s: got %v want %v", n, got, want)
			}
			for i, w := range want.Float32s() {
				if got.Float32s()[i] != w {
					t.Errorf("%s[%d] = %v want %v", n, i, got.Float32s()[i], w)
				}
			}
		}
		for name, f := range z.files {
			if off, _ := f.DataOffset(); off%64 != 0 {
				t.Errorf("entry %s data at offset %d, not 64-byte aligned", name, off)
			}
		}
		if dt, _, _ := z.Stored("a.ids"); dt != "I64" {
			t.Errorf("ids stored as %s", dt)
		}
		z.Close()
		torchCheck(t, p, []string{
			"a.ids int64 [1, 4] 300003.000000",
			"a.s float32 [] 9.000000",
			"a.w16 float16 [2] -6.750000",
			"a.w32 float32 [2, 3] 16.500000",
			"a.wbf bfloat16 [1, 1] 1.500000",
		})
	}
}

// torchCheck loads path with real torch.load when GOSD_TORCH_PYTHON names a
// Python interpreter that has torch (e.g. /usr/bin/python3 with Debian's
// python3-torch), and compares its summary lines.
func torchCheck(t *testing.T, path string, want []string) {
	py := os.Getenv("GOSD_TORCH_PYTHON")
	if py == "" {
		return
	}
	out, err := exec.Command(py, fixtures+"verify_torch.py", path).CombinedOutput()
	if err != nil {
		t.Fatalf("torch.load: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != strings.Join(want, "\n") {
		t.Errorf("torch.load summary:\n%s\nwant:\n%s", got, strings.Join(want, "\n"))
	}
}

// TestTorchZipInertGlobals reads a torch.save file holding the bookkeeping
// objects of real SD 1.x Lightning checkpoints (ModelCheckpoint callback as a
// dict key and as an object, a numpy float64 scalar).
func TestTorchZipInertGlobals(t *testing.T) {
	z, err := OpenTorchZip(fixtures + "tiny_inert.ckpt")
	if err != nil {
		t.Fatal(err)
	}
	defer z.Close()
	if z.Extra()["global_step"] != int64(470000) {
		t.Errorf("extra %v", z.Extra())
	}
	b, err := z.Load("model.diffusion_model.out.2.bias")
	if err != nil {
		t.Fatal(err)
	}
	if got := b.Float32s(); len(got) != 4 || got[0] != 1 || got[1] != -1 || got[2] != 0.5 || got[3] != 2 {
		t.Errorf("bias %v", got)
	}
}
