// Package testckpt gives tests the full-size random-weight SD 1.5 checkpoint
// written by the shared generator ../shared/tools/mkckpt. The file (2.1 GB,
// F16, original single-file layout) is built once per machine into
// os.UserCacheDir()/gosd-test/ under a file lock, so parallel test packages
// never build it twice, and reused while its size is right.
package testckpt

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/gosd/gosd/sd/ckpt"
	"github.com/gosd/gosd/sd/internal/npy"
	"github.com/gosd/gosd/sd/tensor"
	"github.com/gosd/gosd/sd/testmodel"
)

const (
	// SD15Size is the byte size of mkckpt's default output.
	SD15Size = 2132675222
	// SD15SHA256Prefix is how the sha256 of mkckpt's default output begins.
	SD15SHA256Prefix = "80469a83"
	sd15Name         = "sd15-random-f16.safetensors"
)

// RepoRoot walks up from the working directory to the folder holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("testckpt: no go.mod above the working directory")
		}
		dir = parent
	}
}

// SharedDir returns the read-only ../shared folder beside the repository
// root, skipping the test when it is missing.
func SharedDir(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "..", "shared")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("testckpt: %s is missing (the shared test material is not on this machine): %v", dir, err)
	}
	return dir
}

// SD15 returns the path of the full-size random SD 1.5 checkpoint
// (mkckpt defaults: F16, seed 1234, std 0.02, with buffers), building it on
// first use. It skips the test when ../shared/tools/mkckpt is missing.
func SD15(t testing.TB) string {
	t.Helper()
	shared := SharedDir(t)
	src := filepath.Join(shared, "tools", "mkckpt")
	if _, err := os.Stat(filepath.Join(src, "main.go")); err != nil {
		t.Skipf("testckpt: generator %s is missing: %v", src, err)
	}
	path, err := ensureSD15(src)
	if err != nil {
		t.Fatalf("testckpt: %v", err)
	}
	return path
}

func ensureSD15(src string) (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	dir := filepath.Join(base, "gosd-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	out := filepath.Join(dir, sd15Name)
	if sizeOK(out) {
		return out, nil
	}
	lock, err := os.OpenFile(filepath.Join(dir, sd15Name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if sizeOK(out) { // another process built it while we waited
		return out, nil
	}
	bin := filepath.Join(dir, "mkckpt")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = src
	build.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false", "GOTOOLCHAIN=local")
	if msg, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", src, err, msg)
	}
	tmp := out + ".partial"
	os.Remove(tmp)
	gen := exec.Command(bin, "-o", tmp)
	if msg, err := gen.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("%s -o %s: %v\n%s", bin, tmp, err, msg)
	}
	sum, err := fileSHA256(tmp)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(sum, SD15SHA256Prefix) {
		os.Remove(tmp)
		return "", fmt.Errorf("mkckpt output has sha256 %s, want %s...: the generator changed?", sum, SD15SHA256Prefix)
	}
	if !sizeOK(tmp) {
		os.Remove(tmp)
		return "", fmt.Errorf("mkckpt output %s does not have the expected %d bytes", tmp, SD15Size)
	}
	if err := os.Rename(tmp, out); err != nil {
		return "", err
	}
	return out, nil
}

func sizeOK(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Size() == SD15Size
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Tiny writes the tiny random SD 1.5 model of sd/testmodel (seed
// testmodel.DefaultSeed) in layout "single", "ckpt" or "diffusers" with
// weights of dtype dt into a fresh temporary folder and returns its path
// (the file, or the diffusers folder). The diffusers layout needs the
// configs in ../shared/models/sd15 and skips the test without them.
func Tiny(t testing.TB, layout string, dt tensor.DType) string {
	t.Helper()
	if layout == "diffusers" {
		if _, err := testmodel.DefaultConfigDir(); err != nil {
			t.Skipf("testckpt: %v", err)
		}
	}
	name := map[string]string{"single": "tiny.safetensors", "ckpt": "tiny.ckpt", "diffusers": "tiny"}[layout]
	if name == "" {
		t.Fatalf("testckpt: unknown layout %q", layout)
	}
	out := filepath.Join(t.TempDir(), name)
	opts := testmodel.Options{Size: "tiny", DType: dt, Layout: layout, Seed: testmodel.DefaultSeed, Output: out}
	if err := testmodel.Write(opts); err != nil {
		t.Fatalf("testckpt: %v", err)
	}
	return out
}

// GoldenBackend is the backend of the full-size golden tests: the native CPU
// backend, or the pure-Go reference when GOSD_GOLDEN_REF is set (minutes
// per UNet pass on two cores).
func GoldenBackend() tensor.Backend {
	if os.Getenv("GOSD_GOLDEN_REF") != "" {
		return tensor.NewRef()
	}
	return tensor.NewCPU()
}

// GoldenDir returns the folder of the golden SD 1.5 run's tensors
// (../shared/golden/sd15-dev-fox); it skips the test without ../shared.
func GoldenDir(t testing.TB) string {
	t.Helper()
	return filepath.Join(SharedDir(t), "golden", "sd15-dev-fox")
}

// OpenSD15 opens the full-size random SD 1.5 checkpoint (see SD15), closed
// when the test ends.
func OpenSD15(t testing.TB) *ckpt.SafeTensors {
	t.Helper()
	s, err := ckpt.OpenSafetensors(SD15(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// ReadNpy reads the float32 array name in dir and checks its shape.
func ReadNpy(t testing.TB, dir, name string, shape ...int) []float32 {
	t.Helper()
	data, got, err := npy.Read(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if !tensor.SameShape(got, shape) {
		t.Fatalf("%s: shape %v, want %v", name, got, shape)
	}
	return data
}

// TinyLayouts returns the tiny test model (seed 7) twice: opened from a
// diffusers folder (diffusers names and config.json files, closed when the
// test ends) and as the in-memory single-file source. It skips the test
// without the diffusers configs.
func TinyLayouts(t testing.TB) (*ckpt.Checkpoint, tensor.Source) {
	t.Helper()
	if _, err := testmodel.DefaultConfigDir(); err != nil {
		t.Skipf("no diffusers configs to write the folder with: %v", err)
	}
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := testmodel.Write(testmodel.Options{Layout: "diffusers", Output: dir, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	ck, err := ckpt.Open(dir, ckpt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	single, err := testmodel.NewSource(testmodel.Options{Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	return ck, single
}
