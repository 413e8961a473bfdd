package main

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gosd/gosd/sd/tensor"
)

// TestBinaryInterrupt builds the real gosd binary once and checks what only
// a process shows: exit statuses, and that Ctrl-C (SIGINT) during sampling
// stops at the next step with exit 130 and leaves no output file behind.
func TestBinaryInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the gosd binary")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("no go command: %v", err)
	}
	tok := tokenizerDir(t)
	model := tinyModel(t, "single", tensor.F16)
	bin := filepath.Join(t.TempDir(), "gosd")
	build := exec.Command(gobin, "build", "-buildvcs=false", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	// A usage error exits 2 with no panic.
	out, err := exec.Command(bin, "generate", "--bogus").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "-bogus") {
		t.Errorf("gosd generate --bogus: %v\n%s", err, out)
	}

	dir := t.TempDir()
	png := filepath.Join(dir, "long.png")
	cmd := exec.Command(bin, "generate", "--model", model, "--tokenizer", tok, "--prompt", "a fox",
		"--width", "32", "--height", "32", "--steps", "1000", "--seed", "1", "--output", png)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
		if strings.Contains(sc.Text(), "msg=step step=2 ") {
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	for sc.Scan() {
		log.WriteString(sc.Text() + "\n")
	}
	err = cmd.Wait()
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Errorf("after SIGINT: %v, want exit 130\n%s", err, log.String())
	}
	if d := time.Since(sent); d > 20*time.Second { // loose for loaded machines; 1000 steps take minutes
		t.Errorf("took %v to stop after SIGINT", d)
	}
	if !strings.Contains(log.String(), "gosd generate: interrupted") || strings.Contains(log.String(), "step=1000 ") {
		t.Errorf("stderr:\n%s\nwant 'interrupted' well before step 1000", log.String())
	}
	if _, err := os.Stat(png); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s exists after an interrupted run", png)
	}
	if left := dirEntries(t, dir); len(left) > 0 {
		t.Errorf("output folder holds %v after an interrupted run", left)
	}
}
