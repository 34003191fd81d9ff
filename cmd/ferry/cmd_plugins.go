package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"

	"github.com/ferry-dr/ferry/core/pluginhost"

	"github.com/ferry-dr/ferry/sdk"
)

func init() {
	register(&command{
		name: "plugins",
		summary: `List the plugins ferry finds, with their versions and components.

Plugins are executables named ferry-plugin-<name>, searched for in the
plugins folder beside the configuration, ~/.ferry/plugins, each folder of
FERRY_PLUGIN_PATH, and the folder of the ferry binary, in that order; the
first of a name wins. Each plugin is started to ask what it serves.`,
		usage: "ferry plugins [--json]",
		setup: func(fs *pflag.FlagSet) runFunc {
			asJSON := fs.Bool("json", false, "print JSON")
			return func(e *env, args []string) error { return runPlugins(e, args, *asJSON) }
		},
	})
}

// pluginListing is one row of `ferry plugins --json`.
type pluginListing struct {
	Name       string             `json:"name"`
	Path       string             `json:"path"`
	Version    string             `json:"version,omitempty"`
	Protocol   string             `json:"protocol,omitempty"`
	Components []componentListing `json:"components,omitempty"`
	Shadowed   bool               `json:"shadowed,omitempty"`
	Error      string             `json:"error,omitempty"`
}

type componentListing struct {
	Kind         sdk.Kind `json:"kind"`
	Type         string   `json:"type"`
	Capabilities []string `json:"capabilities"`
	// MaxRestorePoints is the most restore points a target keeps; absent
	// when it declares no limit.
	MaxRestorePoints int `json:"max_restore_points,omitempty"`
	// Hardware is what a target builds (protocol 1.8); absent when it
	// does not say.
	Hardware *sdk.HardwareSupport `json:"hardware,omitempty"`
}

func runPlugins(e *env, args []string, asJSON bool) error {
	if len(args) > 0 {
		return usagef("unexpected argument %q", args[0])
	}
	h := e.host()
	defer h.Close()

	dirs := pluginhost.SearchPath(e.configDir)
	var rows []pluginListing
	failed := false
	for _, f := range pluginhost.Discover(dirs) {
		row := pluginListing{Name: f.Name, Path: f.Path, Shadowed: f.Shadowed}
		if !f.Shadowed {
			info, err := h.Info(context.Background(), f.Name)
			if err != nil {
				row.Error = err.Error()
				failed = true
			} else {
				row.Version = info.Version
				row.Protocol = fmt.Sprintf("%d.%d", info.ProtocolMajor, info.ProtocolMinor)
				for _, comp := range info.Components {
					row.Components = append(row.Components, componentListing{Kind: comp.Kind, Type: comp.Type,
						Capabilities: capabilityNames(comp.Capabilities), MaxRestorePoints: comp.Limits.MaxRestorePoints, Hardware: comp.Hardware})
				}
			}
		}
		rows = append(rows, row)
	}
	if asJSON {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		if rows == nil {
			rows = []pluginListing{}
		}
		if err := enc.Encode(rows); err != nil {
			return err
		}
	} else {
		printPlugins(e, rows, dirs)
	}
	if failed {
		return &exitError{code: exitFailure}
	}
	return nil
}

func printPlugins(e *env, rows []pluginListing, dirs []string) {
	if len(rows) == 0 {
		fmt.Fprintf(e.stdout, "no plugins found; looked in:\n  %s\n", strings.Join(dirs, "\n  "))
		return
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVERSION\tPROTOCOL\tCOMPONENTS\tPATH")
	for _, r := range rows {
		var comps []string
		for _, c := range r.Components {
			s := fmt.Sprintf("%s %q", c.Kind, c.Type)
			notes := c.Capabilities
			if c.MaxRestorePoints > 0 {
				notes = append(notes[:len(notes):len(notes)], fmt.Sprintf("at most %d restore points", c.MaxRestorePoints))
			}
			if hw := c.Hardware; hw != nil {
				notes = append(notes[:len(notes):len(notes)], "builds "+hardwareNames(hw))
			}
			if len(notes) > 0 {
				s += " (" + strings.Join(notes, ", ") + ")"
			}
			comps = append(comps, s)
		}
		version, proto := r.Version, r.Protocol
		switch {
		case r.Shadowed:
			version, comps = "-", []string{"shadowed by an earlier folder"}
		case r.Error != "":
			version, comps = "-", []string{"error: " + r.Error}
		}
		if proto == "" {
			proto = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", r.Name, version, proto, strings.Join(comps, "; "), r.Path)
	}
	tw.Flush()
}

// hardwareNames says what a target builds in a few words: "generation 2
// (efi), generation 1 (bios) hardware", "hardware as given".
func hardwareNames(hw *sdk.HardwareSupport) string {
	if hw.AsGiven {
		return "hardware as given"
	}
	var out []string
	for _, p := range hw.Profiles {
		out = append(out, p.Name())
	}
	return strings.Join(out, " and ") + " VMs"
}

func capabilityNames(c sdk.Capabilities) []string {
	names := []string{}
	if c.ChangeTracking {
		names = append(names, "change-tracking")
	}
	if c.DirectData {
		names = append(names, "direct-data")
	}
	if c.Quiesce {
		names = append(names, "quiesce")
	}
	if c.ReIP {
		names = append(names, "re-ip")
	}
	if c.Folders {
		names = append(names, "folders")
	}
	if c.Tags {
		names = append(names, "tags")
	}
	if c.TestFailover {
		names = append(names, "test-failover")
	}
	if c.Failback {
		names = append(names, "failback")
	}
	if c.MapReplicas {
		names = append(names, "map-replicas")
	}
	return names
}
