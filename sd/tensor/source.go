package tensor

import "sort"

// Source supplies named weight tensors, as an opened checkpoint does. Names
// follow the original single-file (ldm) layout, e.g.
// "model.diffusion_model.input_blocks.0.0.weight".
type Source interface {
	// Get returns the tensor stored under name, or false when there is none.
	Get(name string) (*Tensor, bool)
	// Names lists every tensor name, sorted.
	Names() []string
}

// MapSource is a Source backed by a map; tests and generators use it.
type MapSource map[string]*Tensor

func (m MapSource) Get(name string) (*Tensor, bool) { t, ok := m[name]; return t, ok }

func (m MapSource) Names() []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}
