package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

// fixtureDir holds the tiny models every CLI test shares; TestMain makes and
// removes it.
var fixtureDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gosd-cli-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var (
	modelsMu sync.Mutex
	models   = map[string]string{}
)

// tinyModel returns the tiny random SD 1.5 model (testmodel.DefaultSeed) in
// layout "single", "ckpt" or "diffusers" with weights of dtype dt, written
// on first use.
func tinyModel(t *testing.T, layout string, dt tensor.DType) string {
	t.Helper()
	if layout == "diffusers" {
		if _, err := testmodel.DefaultConfigDir(); err != nil {
			t.Skipf("diffusers layout needs the shared SD 1.5 configs: %v", err)
		}
	}
	key := layout + "-" + dt.String()
	modelsMu.Lock()
	defer modelsMu.Unlock()
	if p, ok := models[key]; ok {
		return p
	}
	name := map[string]string{"single": "tiny.safetensors", "ckpt": "tiny.ckpt", "diffusers": "tiny"}[layout]
	if name == "" {
		t.Fatalf("unknown layout %q", layout)
	}
	dir := filepath.Join(fixtureDir, key)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	err := testmodel.Write(testmodel.Options{Size: "tiny", DType: dt, Layout: layout, Seed: testmodel.DefaultSeed, Output: p})
	if err != nil {
		t.Fatalf("testmodel.Write %s: %v", key, err)
	}
	models[key] = p
	return p
}

// sharedDir is ../shared beside the repository root; tests that need it skip
// without it.
func sharedDir(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's working directory")
		}
		dir = parent
	}
	s := filepath.Join(dir, "..", "shared")
	if _, err := os.Stat(s); err != nil {
		t.Skipf("shared test material missing: %v", err)
	}
	return s
}

// tokenizerDir is the real SD 1.5 CLIP tokenizer folder.
func tokenizerDir(t *testing.T) string {
	t.Helper()
	d := filepath.Join(sharedDir(t), "models", "sd15", "tokenizer")
	if _, err := os.Stat(filepath.Join(d, "merges.txt")); err != nil {
		t.Skipf("SD 1.5 tokenizer missing: %v", err)
	}
	return d
}

// cliResult is what one in-process gosd run produced.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs gosd in-process with args. No test may reach the panic
// recovery path (exit 3, "internal error").
func runCLI(t *testing.T, args ...string) cliResult {
	t.Helper()
	return runCLIContext(t, context.Background(), args...)
}

func runCLIContext(t *testing.T, ctx context.Context, args ...string) cliResult {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	r := cliResult{code, out.String(), errOut.String()}
	if code == 3 || strings.Contains(r.stderr, "internal error") {
		t.Fatalf("gosd %s: panic reached the user (exit %d):\n%s", strings.Join(args, " "), code, r.stderr)
	}
	return r
}

// dirEntries lists the names in dir.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	return names
}

// assertNoFile fails when path exists.
func assertNoFile(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists (or cannot be checked: %v), want no file", path, err)
	}
}
