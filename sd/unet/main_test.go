package unet_test

import (
	"testing"

	"github.com/gosd/gosd/sd/internal/testckpt"
)

func TestMain(m *testing.M) { testckpt.Main(m) }
