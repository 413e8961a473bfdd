package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"unsafe"

	"github.com/gosd/gosd/sd/tensor"
)

// openPTY opens a pseudo-terminal pair (master, slave) through /dev/ptmx.
func openPTY() (*os.File, *os.File, error) {
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, err
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		m.Close()
		return nil, nil, fmt.Errorf("TIOCGPTN: %w", e)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		m.Close()
		return nil, nil, fmt.Errorf("TIOCSPTLCK: %w", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		return nil, nil, err
	}
	return m, s, nil
}

// TestGenerateProgressBar: on a terminal, generate draws a redrawn one-line
// progress bar ("\r[====...] k/n") instead of a log line per step.
func TestGenerateProgressBar(t *testing.T) {
	tok := tokenizerDir(t)
	model := tinyModel(t, "single", tensor.F16)
	master, slave, err := openPTY()
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	defer master.Close()
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(master) // ends with EIO once the slave is closed
		got <- b
	}()
	out := filepath.Join(t.TempDir(), "bar.png")
	var stdout bytes.Buffer
	code := run(context.Background(), []string{"generate", "--model", model, "--tokenizer", tok, "--prompt", "a fox",
		"--width", "16", "--height", "16", "--steps", "3", "--seed", "5", "--output", out}, &stdout, slave)
	slave.Close()
	term := string(<-got)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, term)
	}
	for _, w := range []string{"\r[" + strings.Repeat("=", 10) + strings.Repeat(" ", 20) + "] 1/3 ",
		"\r[" + strings.Repeat("=", 20) + strings.Repeat(" ", 10) + "] 2/3 ",
		"\r[" + strings.Repeat("=", 30) + "] 3/3 ", "s/step", "msg=done"} {
		if !strings.Contains(term, w) {
			t.Errorf("terminal output lacks %q:\n%q", w, term)
		}
	}
	if strings.Contains(term, "msg=step") {
		t.Errorf("per-step log lines on a terminal:\n%q", term)
	}
	if stdout.String() != out+"\n" {
		t.Errorf("stdout %q", stdout.String())
	}
}
