package tensor

import (
	"errors"
	"testing"
)

// TestRefLinearEmpty: a weight with no inputs or outputs is a shape error,
// not a division by zero.
func TestRefLinearEmpty(t *testing.T) {
	err := NewRef().Linear(New(2, 3), New(2, 0), New(3, 0), nil)
	if !errors.Is(err, ErrShape) {
		t.Fatalf("err = %v, want a shape error", err)
	}
}
