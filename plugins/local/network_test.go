package local

import (
	"testing"
)

func TestMACIsStableAndLocal(t *testing.T) {
	a, b := macFor("vm", 0), macFor("vm", 1)
	if a != macFor("vm", 0) || a == b || a[:3] != "02:" || len(a) != 17 {
		t.Errorf("macs %q %q", a, b)
	}
}
