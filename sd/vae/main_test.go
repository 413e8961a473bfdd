package vae

import (
	"testing"

	"github.com/gosd/gosd/sd/internal/testckpt"
)

func TestMain(m *testing.M) { testckpt.Main(m) }
