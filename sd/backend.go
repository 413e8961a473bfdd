package sd

import (
	"fmt"
	"sort"
	"strings"

	"github.com/gosd/gosd/sd/tensor"
)

// backendFactories builds backends by name; build-tagged files (the CUDA
// backend) add to it in init.
var backendFactories = map[string]func(backendOpts) (tensor.Backend, error){
	"cpu": func(o backendOpts) (tensor.Backend, error) {
		b := tensor.NewCPU()
		if o.threads > 0 {
			b.SetThreads(o.threads)
		}
		return b, nil
	},
	"ref": func(backendOpts) (tensor.Backend, error) { return tensor.NewRef(), nil },
}

// backendOpts carry the settings a backend factory may use.
type backendOpts struct {
	threads int // CPU threads, 0 for all
	device  int // GPU index
}

// Backends lists the backend names this build supports.
func Backends() []string {
	names := make([]string, 0, len(backendFactories))
	for n := range backendFactories {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// NewBackend returns the named backend ("" means "cpu"); threads caps the
// CPU backend's threads when positive.
func NewBackend(name string, threads int) (tensor.Backend, error) {
	return newBackend(name, backendOpts{threads: threads})
}

// NewDeviceBackend is NewBackend with a GPU index for GPU backends.
func NewDeviceBackend(name string, threads, device int) (tensor.Backend, error) {
	return newBackend(name, backendOpts{threads: threads, device: device})
}

func newBackend(name string, o backendOpts) (tensor.Backend, error) {
	if name == "" {
		name = "cpu"
	}
	f, ok := backendFactories[strings.ToLower(name)]
	if !ok {
		hint := ""
		if strings.EqualFold(name, "cuda") {
			hint = "; the CUDA backend needs a build with -tags cuda (make cuda for the CLI; Go programs: make cuda-lib, then go build -tags cuda)"
		}
		return nil, fmt.Errorf("unknown backend %q (this build has: %s%s)", name, strings.Join(Backends(), ", "), hint)
	}
	return f(o)
}
