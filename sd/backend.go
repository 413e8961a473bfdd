package sd

import (
	"fmt"
	"sort"
	"strings"

	"github.com/gosd/gosd/sd/tensor"
)

// backendFactories builds backends by name; build-tagged files (the CUDA
// backend) add to it in init.
var backendFactories = map[string]func(threads int) (tensor.Backend, error){
	"cpu": func(threads int) (tensor.Backend, error) {
		b := tensor.NewCPU()
		if threads > 0 {
			b.SetThreads(threads)
		}
		return b, nil
	},
	"ref": func(int) (tensor.Backend, error) { return tensor.NewRef(), nil },
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
	if name == "" {
		name = "cpu"
	}
	f, ok := backendFactories[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("unknown backend %q (this build has: %s)", name, strings.Join(Backends(), ", "))
	}
	return f(threads)
}
