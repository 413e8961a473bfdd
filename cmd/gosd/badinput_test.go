package main

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gosd/gosd/sd"
	"github.com/gosd/gosd/sd/tensor"
)

// cliFixture is a file under testdata/cli.
func cliFixture(name string) string { return filepath.Join("..", "..", "testdata", "cli", name) }

// writeFile writes b to dir/name and returns the path.
func writeFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// safetensorsFile assembles a safetensors file from a header (JSON-encoded
// as given) and a data section.
func safetensorsFile(t *testing.T, header map[string]any, data []byte) []byte {
	t.Helper()
	h, err := json.Marshal(header)
	if err != nil {
		t.Fatal(err)
	}
	out := binary.LittleEndian.AppendUint64(nil, uint64(len(h)))
	return append(append(out, h...), data...)
}

// Pickle opcodes used by the hand-written malicious pickles.
const (
	opProto       = 0x80
	opGlobal      = 'c'
	opBinUnicode  = 'X'
	opShortBinUni = 0x8c
	opStackGlobal = 0x93
	opTuple1      = 0x85
	opReduce      = 'R'
	opStop        = '.'
)

// callPickle is a pickle that, loaded by Python's pickle module, calls
// module.name(arg): PROTO 2, GLOBAL 'module\nname', arg, TUPLE1, REDUCE,
// STOP. With stack=true the callable is named by protocol 4's STACK_GLOBAL.
func callPickle(module, name, arg string, stack bool) []byte {
	var b bytes.Buffer
	if stack {
		b.Write([]byte{opProto, 4})
		for _, s := range []string{module, name} {
			b.WriteByte(opShortBinUni)
			b.WriteByte(byte(len(s)))
			b.WriteString(s)
		}
		b.WriteByte(opStackGlobal)
	} else {
		b.Write([]byte{opProto, 2})
		b.WriteString(string(rune(opGlobal)) + module + "\n" + name + "\n")
	}
	b.WriteByte(opBinUnicode)
	b.Write(binary.LittleEndian.AppendUint32(nil, uint32(len(arg))))
	b.WriteString(arg)
	b.Write([]byte{opTuple1, opReduce, opStop})
	return b.Bytes()
}

// torchZip packs a pickle as archive/data.pkl the way torch.save lays out
// its zip files.
func torchZip(t *testing.T, pkl []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data []byte
	}{{"archive/data.pkl", pkl}, {"archive/byteorder", []byte("little")}, {"archive/version", []byte("3\n")}} {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: f.name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(f.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestGenerateBadInput runs `gosd generate` on broken models, hostile
// checkpoints and bad flags. Each must fail before sampling with a non-zero
// exit and an error on stderr naming the problem, and leave no output file
// (nor any temporary file) in the output folder.
func TestGenerateBadInput(t *testing.T) {
	tok := tokenizerDir(t)
	model := tinyModel(t, "single", tensor.F16)
	bad := t.TempDir()
	good, err := os.ReadFile(model)
	if err != nil {
		t.Fatal(err)
	}
	hlen := int(binary.LittleEndian.Uint64(good))

	// A command in a malicious pickle would create this file.
	sentinel := filepath.Join(bad, "pwned")
	evil := map[string]string{
		"os.system":          writeFile(t, bad, "os-system.ckpt", torchZip(t, callPickle("os", "system", "touch "+sentinel, false))),
		"builtins.eval":      writeFile(t, bad, "eval.ckpt", torchZip(t, callPickle("builtins", "eval", "open('"+sentinel+"', 'w')", false))),
		"posix.system stack": writeFile(t, bad, "posix-stack.ckpt", torchZip(t, callPickle("posix", "system", "touch "+sentinel, true))),
		"builtins.exec":      writeFile(t, bad, "exec.pth", torchZip(t, callPickle("builtins", "exec", "open('"+sentinel+"', 'w')", true))),
	}
	f32x4 := func(offsets ...int) map[string]any {
		return map[string]any{"dtype": "F32", "shape": []int{4}, "data_offsets": offsets}
	}
	noZipPickle := writeFile(t, bad, "no-pickle.ckpt", func() []byte {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		w, _ := zw.Create("readme.txt")
		w.Write([]byte("not a checkpoint"))
		zw.Close()
		return buf.Bytes()
	}())
	noTokMerges := t.TempDir()
	vocab, err := os.ReadFile(filepath.Join(tok, "vocab.json"))
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, noTokMerges, "vocab.json", vocab)

	outFolder := filepath.Join(bad, "folder.png")
	if err := os.Mkdir(outFolder, 0o755); err != nil {
		t.Fatal(err)
	}

	type tc struct {
		name  string
		model string   // "" means the good tiny model
		args  []string // appended to the base command line (later flags win)
		code  int      // 0: any non-zero
		want  []string // substrings of stderr
	}
	cases := []tc{
		{name: "truncated data", model: writeFile(t, bad, "trunc.safetensors", good[:len(good)/2]),
			want: []string{"trunc.safetensors", "point past the end", "truncated"}},
		{name: "truncated header", model: writeFile(t, bad, "trunc-header.safetensors", good[:8+hlen/2]),
			want: []string{"trunc-header.safetensors", "header length", "runs past the end"}},
		{name: "offsets past end", model: writeFile(t, bad, "lie-end.safetensors",
			safetensorsFile(t, map[string]any{"w": f32x4(0, 1024)}, make([]byte, 16))),
			want: []string{"lie-end.safetensors", `"w"`, "data_offsets [0, 1024] point past the end of the 16-byte data section"}},
		{name: "offsets size mismatch", model: writeFile(t, bad, "lie-size.safetensors",
			safetensorsFile(t, map[string]any{"w": f32x4(0, 8)}, make([]byte, 16))),
			want: []string{"lie-size.safetensors", "needs 16 bytes", "hold 8"}},
		{name: "offsets overlap", model: writeFile(t, bad, "lie-overlap.safetensors",
			safetensorsFile(t, map[string]any{"a": f32x4(0, 16), "b": f32x4(8, 24)}, make([]byte, 32))),
			want: []string{"lie-overlap.safetensors", "overlap"}},
		{name: "offsets reversed", model: writeFile(t, bad, "lie-order.safetensors",
			safetensorsFile(t, map[string]any{"w": f32x4(16, 0)}, make([]byte, 16))),
			want: []string{"lie-order.safetensors", "not an ordered range"}},
		{name: "valid safetensors, not SD", model: writeFile(t, bad, "other.safetensors",
			safetensorsFile(t, map[string]any{"w": f32x4(0, 16)}, make([]byte, 16))),
			want: []string{"other.safetensors", "not a Stable Diffusion", "no UNet"}},
		{name: "html page", model: cliFixture("download-page.safetensors"),
			want: []string{"download-page.safetensors", "HTML page"}},
		{name: "git lfs pointer", model: cliFixture("lfs-pointer.safetensors"),
			want: []string{"lfs-pointer.safetensors", "Git LFS pointer", "git lfs pull"}},
		{name: "empty file", model: writeFile(t, bad, "empty.safetensors", nil),
			want: []string{"empty.safetensors", "empty"}},
		{name: "pickle os.system", model: evil["os.system"],
			want: []string{"os-system.ckpt", `"os.system" is not allowed`}},
		{name: "pickle builtins.eval", model: evil["builtins.eval"],
			want: []string{"eval.ckpt", `"builtins.eval" is not allowed`}},
		{name: "pickle STACK_GLOBAL posix.system", model: evil["posix.system stack"],
			want: []string{"posix-stack.ckpt", `"posix.system" is not allowed`}},
		{name: "pickle STACK_GLOBAL builtins.exec", model: evil["builtins.exec"],
			want: []string{"exec.pth", `"builtins.exec" is not allowed`}},
		{name: "legacy pickle", model: writeFile(t, bad, "legacy.ckpt", []byte("\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u.")),
			want: []string{"legacy.ckpt", "legacy (non-zip) PyTorch pickle"}},
		{name: "zip without pickle", model: noZipPickle,
			want: []string{"no-pickle.ckpt", "data.pkl"}},
		{name: "random bytes", model: writeFile(t, bad, "noise.safetensors", bytes.Repeat([]byte{0x13, 0x37}, 64)),
			want: []string{"noise.safetensors", "unknown format"}},
		{name: "missing model", model: filepath.Join(bad, "nope.safetensors"),
			want: []string{"nope.safetensors", "no such file"}},
		{name: "no model flag", model: "-", code: 2, want: []string{"--model is required"}},
		{name: "unknown sampler", args: []string{"--sampler", "euler_z"},
			want: []string{`unknown sampler "euler_z"`, "euler_a"}},
		{name: "unknown schedule", args: []string{"--schedule", "cosine"},
			want: []string{`unknown schedule "cosine"`, "karras"}},
		{name: "width not multiple of 8", args: []string{"--width", "36"},
			want: []string{"36x32", "multiples of 8"}},
		{name: "width 0", args: []string{"--width", "0"}, want: []string{"--width 0"}},
		{name: "height 0", args: []string{"--height", "0"}, want: []string{"--height 0"}},
		{name: "width negative", args: []string{"--width", "-64"}, want: []string{"-64"}},
		{name: "side over limit", args: []string{"--width", "8192"}, want: []string{"8192x32", "at most 4096"}},
		{name: "steps 0", args: []string{"--steps", "0"}, want: []string{"--steps 0"}},
		{name: "steps negative", args: []string{"--steps", "-3"}, want: []string{"--steps -3"}},
		{name: "steps over limit", args: []string{"--steps", "100000"}, want: []string{"steps 100000", "between 1 and 1000"}},
		{name: "cfg 0", args: []string{"--cfg", "0"}, want: []string{"--cfg 0"}},
		{name: "cfg over limit", args: []string{"--cfg", "1000"}, want: []string{"cfg 1000"}},
		{name: "clip skip 0", args: []string{"--clip-skip", "0"}, want: []string{"--clip-skip 0"}},
		{name: "unknown rng", args: []string{"--rng", "mersenne"}, want: []string{`unknown rng "mersenne"`}},
		{name: "unknown backend", args: []string{"--backend", "tpu"}, want: []string{`unknown backend "tpu"`}},
		{name: "width not a number", args: []string{"--width", "wide"}, code: 2, want: []string{`invalid value "wide" for flag -width`}},
		{name: "prompt file not UTF-8", args: []string{"--prompt", "", "--prompt-file", cliFixture("prompt-latin1.txt")},
			want: []string{"prompt-latin1.txt", "not UTF-8"}},
		{name: "negative file not UTF-8", args: []string{"--negative-file", cliFixture("prompt-latin1.txt")},
			want: []string{"prompt-latin1.txt", "not UTF-8"}},
		{name: "missing prompt file", args: []string{"--prompt", "", "--prompt-file", filepath.Join(bad, "nope.txt")},
			want: []string{"nope.txt", "no such file"}},
		{name: "prompt and prompt file", args: []string{"--prompt-file", cliFixture("prompt-multiline.txt")},
			code: 2, want: []string{"--prompt or --prompt-file, not both"}},
		{name: "missing tokenizer folder", args: []string{"--tokenizer", filepath.Join(bad, "no-tokenizer")},
			want: []string{"no-tokenizer", "vocab.json"}},
		{name: "tokenizer without merges.txt", args: []string{"--tokenizer", noTokMerges},
			want: []string{noTokMerges, "merges.txt"}},
		{name: "lora tag without --lora-dir", args: []string{"--prompt", "a fox <lora:foxstyle:0.8>"},
			want: []string{`"foxstyle"`, "--lora-dir"}},
		{name: "lora weight not a number", args: []string{"--prompt", "a fox <lora:foxstyle:lots>"},
			want: []string{"<lora:foxstyle:lots>", `weight "lots" is not a number`}},
		{name: "missing lora folder", args: []string{"--prompt", "a fox <lora:foxstyle:1>", "--lora-dir", filepath.Join(bad, "no-loras")},
			want: []string{"no-loras"}},
		{name: "missing embeddings folder", args: []string{"--embeddings-dir", filepath.Join(bad, "no-embeddings")},
			want: []string{"no-embeddings"}},
		{name: "unquoted prompt", args: []string{"a", "red", "fox", "--steps", "2"}, code: 2,
			want: []string{`unexpected argument "a"`, "--prompt"}},
		{name: "unknown flag", args: []string{"--bogus"}, code: 2, want: []string{"flag provided but not defined: -bogus"}},
		{name: "output not png", args: []string{"--output", "OUTDIR/out.jpg"}, code: 2,
			want: []string{"out.jpg", "only .png output"}},
		{name: "output without extension", args: []string{"--output", "OUTDIR/out"}, code: 2,
			want: []string{"only .png output"}},
		{name: "output folder missing", args: []string{"--output", "OUTDIR/sub/out.png"},
			want: []string{"output folder", "sub", "no such file"}},
		{name: "output is a folder", args: []string{"--output", outFolder},
			want: []string{outFolder, "is a folder"}},
		{name: "output folder is a file", args: []string{"--output", filepath.Join(evil["os.system"], "out.png")},
			want: []string{"os-system.ckpt", "not a"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			outDir := t.TempDir()
			out := filepath.Join(outDir, "out.png")
			m := c.model
			if m == "" {
				m = model
			}
			args := []string{"generate", "--tokenizer", tok, "--prompt", "a fox",
				"--width", "32", "--height", "32", "--steps", "1", "--seed", "1", "--output", out}
			if m != "-" {
				args = append(args, "--model", m)
			}
			for _, a := range c.args {
				args = append(args, strings.ReplaceAll(a, "OUTDIR", outDir))
			}
			r := runCLI(t, args...)
			if r.code == 0 || (c.code != 0 && r.code != c.code) {
				t.Errorf("exit %d, want %v", r.code, map[bool]any{true: c.code, false: "non-zero"}[c.code != 0])
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
				}
			}
			if !strings.HasPrefix(r.stderr, "gosd generate: ") && !strings.Contains(r.stderr, "\ngosd generate: ") {
				t.Errorf("stderr has no 'gosd generate: ' error line:\n%s", r.stderr)
			}
			// Every problem is found before sampling starts.
			if strings.Contains(r.stderr, "msg=step") {
				t.Errorf("sampling started before the error:\n%s", r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
			assertNoFile(t, out)
			if left := dirEntries(t, outDir); len(left) > 0 {
				t.Errorf("output folder holds %v after a failed run, want nothing", left)
			}
		})
	}
	assertNoFile(t, sentinel)
}

// TestGenerateAbsurdSize: 4096x4096 passes the side limit but its VAE
// decode needs about 52 GB; it must be refused before the model is even
// loaded, by the memory check, wherever less than that is available.
func TestGenerateAbsurdSize(t *testing.T) {
	const need = 4096 * 4096 * 128 * 4 * 6
	if avail, ok := sd.AvailableMemory(); !ok || avail >= need {
		t.Skipf("MemAvailable %d bytes (known: %v): a 4096x4096 decode fits here", avail, ok)
	}
	out := filepath.Join(t.TempDir(), "big.png")
	// The model does not exist: the size must be refused before loading it.
	r := runCLI(t, "generate", "--model", filepath.Join(t.TempDir(), "absent.safetensors"),
		"--width", "4096", "--height", "4096", "--prompt", "a fox", "--output", out)
	if r.code == 0 || !strings.Contains(r.stderr, "size 4096x4096 needs about 51.5 GB of memory") {
		t.Errorf("exit %d, stderr:\n%s\nwant the memory check's refusal", r.code, r.stderr)
	}
	assertNoFile(t, out)
}

// TestUnknownCommand: exit 2 with the command list.
func TestUnknownCommand(t *testing.T) {
	r := runCLI(t, "frobnicate", "--model", "x")
	if r.code != 2 || !strings.Contains(r.stderr, `unknown command "frobnicate"`) || !strings.Contains(r.stderr, "generate") {
		t.Errorf("exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if r := runCLI(t); r.code != 2 || !strings.Contains(r.stderr, "usage: gosd") {
		t.Errorf("no arguments: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, "help"); r.code != 0 || !strings.Contains(r.stderr, "inspect") {
		t.Errorf("help: exit %d, stderr:\n%s", r.code, r.stderr)
	}
	if r := runCLI(t, "generate", "-h"); r.code != 0 || !strings.Contains(r.stderr, "-sampler") {
		t.Errorf("generate -h: exit %d, stderr:\n%s", r.code, r.stderr)
	}
}
