// Command ferry-plugin-hyperv is ferry's Hyper-V plugin. ferry starts it;
// it serves the plugin protocol and prints nothing on stdout.
package main

import (
	"github.com/ferry-dr/ferry/plugins/hyperv"
	"github.com/ferry-dr/ferry/sdk"
)

func main() { sdk.Serve(hyperv.Plugin()) }
