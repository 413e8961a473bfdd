// Command gosd runs Stable Diffusion on the CPU: text-to-image generation,
// checkpoint inspection, tokenisation, test-model generation and the tiny
// autoencoder round trip.
//
// Usage:
//
//	gosd generate --model PATH --prompt TEXT [flags]
//	gosd inspect PATH
//	gosd tokenize --tokenizer DIR TEXT
//	gosd testmodel --family sd15 --size tiny|full --dtype f32|f16|bf16 --layout single|ckpt|diffusers --output PATH
//	gosd vae roundtrip --encoder E --decoder D --input IMG --output OUT [--json]
//	gosd noise --rng cpu|cuda --seed N --count K
//	gosd bench --model PATH [--size 512] [--steps N] [--json]
//	gosd devices
//	gosd version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/gosd/gosd/sd"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"unsafe"
)

// usageError marks errors in the command line itself (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands []command

func init() {
	commands = []command{
		{"generate", "generate an image from a prompt", runGenerate},
		{"inspect", "describe a checkpoint file or diffusers folder", runInspect},
		{"tokenize", "print the CLIP token ids of a text", runTokenize},
		{"testmodel", "write a deterministic random-weight checkpoint", runTestModel},
		{"vae", "tiny autoencoder tools (vae roundtrip)", runVAE},
		{"bench", "measure kernels and end-to-end speed", runBench},
		{"devices", "list NVIDIA GPUs, driver and CUDA versions, memory", runDevices},
		{"noise", "print the noise torch.randn(K) gives after torch.manual_seed(N) (cuda/cpu)", runNoise},
		{"version", "print the version", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns the process exit status. It never
// lets a panic escape: an internal failure is reported as such.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "gosd: internal error: %v\n", r)
			if os.Getenv("GOSD_DEBUG") != "" {
				stderr.Write(debug.Stack())
			}
			code = 3
		}
	}()
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printUsage(stderr)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands {
		if c.name == args[0] {
			err := c.run(ctx, args[1:], stdout, stderr)
			switch {
			case err == nil:
				return 0
			case errors.Is(err, flag.ErrHelp):
				return 0
			case errors.As(err, new(usageError)) || errors.Is(err, sd.ErrBadRequest):
				fmt.Fprintf(stderr, "gosd %s: %v\n", c.name, err)
				return 2
			case errors.Is(err, context.Canceled):
				fmt.Fprintf(stderr, "gosd %s: interrupted\n", c.name)
				return 130
			default:
				fmt.Fprintf(stderr, "gosd %s: %v\n", c.name, err)
				return 1
			}
		}
	}
	fmt.Fprintf(stderr, "gosd: unknown command %q\n", args[0])
	printUsage(stderr)
	return 2
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: gosd <command> [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrun 'gosd <command> -h' for the flags of a command")
}

// newFlags returns a FlagSet that reports errors instead of exiting.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gosd "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, allowing flags after positional arguments, and
// converts flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usageError{err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// newLogger returns a text slog logger on stderr.
func newLogger(stderr io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
}

// isTerminal reports whether w is an interactive terminal: a file whose
// terminal attributes can be read (TCGETS), which /dev/null and pipes lack.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	var t syscall.Termios
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return errno == 0
}

func runVersion(_ context.Context, _ []string, stdout, _ io.Writer) error {
	fmt.Fprintln(stdout, "gosd", versionString())
	return nil
}
