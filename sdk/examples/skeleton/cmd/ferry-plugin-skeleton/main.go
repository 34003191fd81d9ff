// Command ferry-plugin-skeleton is the skeleton plugin's executable. ferry
// starts it and talks to it over gRPC; it is not meant to be run by hand.
//
// The binary's name matters: ferry looks for files named
// ferry-plugin-<name> in its plugin folders, and <name> must match the
// Name in skeleton.Plugin().
package main

import (
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/examples/skeleton"
)

// main does nothing but serve. In particular it prints nothing: stdout
// carries the handshake with ferry, and anything written there before it
// breaks the connection. Log through the hclog logger Serve installs, on
// stderr.
func main() {
	sdk.Serve(skeleton.Plugin())
}
