//go:build !unix

package sdk

import (
	"os"

	"github.com/hashicorp/go-hclog"
)

// endGroupOnTerm has nothing to do without Unix process groups.
func endGroupOnTerm(hclog.Logger) {}

// exitGroup logs msg and ends the process with code.
func exitGroup(code int, log hclog.Logger, msg string, args ...any) {
	stopProfile()
	log.Error(msg, args...)
	os.Exit(code)
}
