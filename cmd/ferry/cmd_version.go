package main

import (
	"encoding/json"
	"fmt"
	"runtime"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/sdk"
)

func init() {
	register(&command{
		name: "version",
		summary: `Show ferry's version, the Go it was built with, and the plugin protocol it speaks.

The plugin protocol is MAJOR.MINOR: ferry starts only plugins of its
major version; the minor version grows with each addition to it, and
'ferry plugins' shows the version each plugin speaks.`,
		usage: "ferry version [--json]",
		setup: func(fs *pflag.FlagSet) runFunc {
			asJSON := fs.Bool("json", false, "print JSON")
			return func(e *env, args []string) error { return runVersion(e, args, *asJSON) }
		},
	})
}

// versionInfo is what 'ferry version --json' prints.
type versionInfo struct {
	Version        string `json:"version"`         // set at build time (make build: git describe)
	Go             string `json:"go"`              // the Go release ferry was built with
	OS             string `json:"os"`              // GOOS
	Arch           string `json:"arch"`            // GOARCH
	PluginProtocol string `json:"plugin_protocol"` // MAJOR.MINOR, as 'ferry plugins' shows a plugin's
}

func currentVersion() versionInfo {
	return versionInfo{
		Version:        version,
		Go:             runtime.Version(),
		OS:             runtime.GOOS,
		Arch:           runtime.GOARCH,
		PluginProtocol: fmt.Sprintf("%d.%d", sdk.ProtocolMajor, sdk.ProtocolMinor),
	}
}

func runVersion(e *env, args []string, asJSON bool) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	v := currentVersion()
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	fmt.Fprintf(e.stdout, "ferry %s\ngo: %s %s/%s\nplugin protocol: %s\n", v.Version, v.Go, v.OS, v.Arch, v.PluginProtocol)
	return nil
}
