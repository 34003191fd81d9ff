package local

import (
	"crypto/sha256"
	"fmt"

	"github.com/ferry-dr/ferry/sdk"
)

// applyNetwork rewrites the NICs of vm with the rules; on an error vm is
// left as it was.
func applyNetwork(rules *sdk.NetworkRules, vm *sdk.VM) error {
	nics, err := rules.Apply(vm.NICs)
	if err != nil {
		return fmt.Errorf("re-ip vm %q: %w", vm.Name, err)
	}
	vm.NICs = nics
	return nil
}

// macFor derives a stable, locally administered MAC for NIC i of a VM.
func macFor(vm string, i int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s/%d", vm, i))
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", h[0], h[1], h[2], h[3], h[4])
}
