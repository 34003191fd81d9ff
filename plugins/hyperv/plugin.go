package hyperv

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// Version is the plugin's version.
const Version = "0.1.0"

// simPrefix starts the host attribute of a simulated host, and
// simClusterPrefix that of a simulated failover cluster.
const (
	simPrefix        = "sim:"
	simClusterPrefix = "simcluster:"
)

// Plugin returns what ferry-plugin-hyperv serves: a source and a target of
// type "hyperv".
func Plugin() *sdk.Plugin {
	return &sdk.Plugin{
		Name:    "hyperv",
		Version: Version,
		Sources: map[string]sdk.Component[sdk.Source]{
			"hyperv": {
				Schema:       sourceSchema(),
				Capabilities: SourceCapabilities,
				Validate:     validate,
				New: func(ctx context.Context, cfg cty.Value) (sdk.Source, error) {
					c, err := decode(cfg)
					if err != nil {
						return nil, err
					}
					h, err := connect(ctx, c.Host)
					if err != nil {
						return nil, err
					}
					return NewSource(h), nil
				},
			},
		},
		Targets: map[string]sdk.Component[sdk.Target]{
			"hyperv": {
				Schema:       targetSchema(),
				Capabilities: TargetCapabilities,
				Limits: sdk.Limits{
					MaxRestorePoints:       MaxRestorePoints,
					MaxRestorePointsReason: "a restore point is a Hyper-V checkpoint of the replica, Hyper-V keeps at most 50 checkpoints per VM, and a failover needs one more",
				},
				Hardware: sdk.HyperVHardware(),
				Validate: validate,
				New: func(ctx context.Context, cfg cty.Value) (sdk.Target, error) {
					c, err := decode(cfg)
					if err != nil {
						return nil, err
					}
					h, err := connect(ctx, c.Host)
					if err != nil {
						return nil, err
					}
					storage := ""
					if c.StoragePath != nil {
						storage = *c.StoragePath
					}
					return NewTarget(h, storage), nil
				},
			},
		},
	}
}

// The capabilities the components declare.
var (
	SourceCapabilities = sdk.Capabilities{ChangeTracking: true, Quiesce: true, Failback: true}
	TargetCapabilities = sdk.Capabilities{ReIP: true, Failback: true}
)

// MaxRestorePoints keeps one checkpoint of Hyper-V's 50 for a failover's
// undo, and one spare.
const MaxRestorePoints = 48

const hostDoc = `The Hyper-V host: "." (or "localhost") for the host the plugin runs on, ` +
	`which is how it is meant to run (on the Hyper-V host, beside a ferry proxy); ` +
	`another host is refused (run a ferry proxy on it and use "." there); ` +
	`or "sim:DIR" (DIR absolute) for the simulated host kept in DIR, for tests and the lab; ` +
	`or "simcluster:DIR" for a simulated failover cluster (replicas go to the node with the fewest VMs ` +
	`as highly available roles, and are found on whichever node owns them).`

func sourceSchema() *schema.Block {
	return &schema.Block{
		Description: "A Hyper-V host whose VMs ferry replicates, with recovery checkpoints and Resilient Change Tracking.",
		Attributes: map[string]*schema.Attribute{
			"host": {Type: cty.String, Required: true, Description: hostDoc},
		},
	}
}

func targetSchema() *schema.Block {
	return &schema.Block{
		Description: "A Hyper-V host that keeps replica VMs; their restore points are Hyper-V checkpoints.",
		Attributes: map[string]*schema.Attribute{
			"host": {Type: cty.String, Required: true, Description: hostDoc},
			"storage_path": {Type: cty.String, Path: true, Description: "The folder on the host where replica VMs " +
				"and their VHDX files go; Hyper-V's default virtual hard disk path when left out. " +
				"The simulated host keeps everything in its own folder and ignores it."},
		},
	}
}

type config struct {
	Host        string  `cty:"host"`
	StoragePath *string `cty:"storage_path"`
}

// validate checks the host attribute (and storage_path, when there is
// one) without touching anything.
func validate(cfg cty.Value) schema.Diagnostics {
	var diags schema.Diagnostics
	at := cty.GetAttrPath("host")
	if cfg.IsNull() || !cfg.IsKnown() || !cfg.Type().IsObjectType() || !cfg.Type().HasAttribute("host") {
		diags.Errorf(at, "Missing host", "the block needs a host")
		return diags
	}
	v := cfg.GetAttr("host")
	switch {
	case !v.IsKnown():
	case v.IsNull() || strings.TrimSpace(v.AsString()) == "":
		diags.Errorf(at, "Empty host", `host must name a Hyper-V host, "." for this one, or "sim:DIR"`)
	case strings.HasPrefix(v.AsString(), simPrefix):
		if dir := strings.TrimPrefix(v.AsString(), simPrefix); !filepath.IsAbs(dir) {
			diags.Errorf(at, "Relative simulated host folder", "%q: the folder after sim: must be absolute", v.AsString())
		}
	case strings.HasPrefix(v.AsString(), simClusterPrefix):
		if dir := strings.TrimPrefix(v.AsString(), simClusterPrefix); !filepath.IsAbs(dir) {
			diags.Errorf(at, "Relative simulated cluster folder", "%q: the folder after simcluster: must be absolute", v.AsString())
		}
	}
	if cfg.Type().HasAttribute("storage_path") {
		if sp := cfg.GetAttr("storage_path"); sp.IsKnown() && !sp.IsNull() && sp.AsString() == "" {
			diags.Errorf(cty.GetAttrPath("storage_path"), "Empty storage path", "leave storage_path out for Hyper-V's default, or name a folder")
		}
	}
	return diags
}

func decode(cfg cty.Value) (config, error) {
	var c config
	if err := validate(cfg).Err(); err != nil {
		return c, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	if err := sdk.DecodeConfig(cfg, &c); err != nil {
		return c, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	return c, nil
}

// connect reaches the host the configuration names: the simulated host
// for "sim:DIR", which must exist (the lab and the tests make it), or
// Hyper-V through WMI (connect_windows.go; elsewhere an error).
func connect(ctx context.Context, addr string) (host.Host, error) {
	if dir, ok := strings.CutPrefix(addr, simPrefix); ok {
		if err := checkDir(dir); err != nil {
			return nil, fmt.Errorf("simulated host: %w", err)
		}
		return simhost.Open(dir)
	}
	if dir, ok := strings.CutPrefix(addr, simClusterPrefix); ok {
		c, err := simhost.OpenCluster(dir)
		if err != nil {
			return nil, err
		}
		return newClusterHost(c), nil
	}
	return connectWMI(ctx, addr)
}
