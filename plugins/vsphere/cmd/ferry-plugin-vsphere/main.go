// Command ferry-plugin-vsphere is ferry's vSphere plugin: a source and a
// target of type "vsphere". ferry starts it; it serves the plugin protocol
// and prints nothing of its own on stdout.
package main

import (
	"github.com/ferry-dr/ferry/plugins/vsphere"
	"github.com/ferry-dr/ferry/sdk"
)

func main() {
	sdk.Serve(vsphere.Plugin())
}
