//go:build !linux

package e2e

import "os/exec"

// orphanless does nothing here: only Linux kills a child with its parent.
func orphanless(*exec.Cmd) {}

const orphanParentEnv = "FERRY_E2E_ORPHAN_PARENT"

func orphanParent() {}
