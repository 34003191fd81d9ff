package vsphere

import (
	"context"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
)

// Version is the plugin's version.
const Version = "0.1.0"

// SourceCapabilities are what the vsphere source declares: changed block
// tracking, direct storage access for mapped datastores, quiesced
// snapshots (when VMware Tools run in the guest), and VMs' folders and tags
// (tags on vCenter only: an ESXi host has none), and taking a failback
// into a production VM (failback_source.go; disks written directly).
var SourceCapabilities = sdk.Capabilities{ChangeTracking: true, DirectData: true, Quiesce: true, Folders: true, Tags: true, Failback: true}

// TargetCapabilities are what the vsphere target declares: re-IP through
// guest customization, the direct lane for the first copy of a disk, test
// failover (testfailover.go; replicas written directly), and mapping a
// replica onto a VM the target has (mapreplica.go), and reading a
// failed-over replica for failback (failback_target.go).
var TargetCapabilities = sdk.Capabilities{ReIP: true, DirectData: true, TestFailover: true, MapReplicas: true, Failback: true}

// TargetLimits are what the vsphere target cannot go beyond: MaxRestorePoints
// restore points per replica.
var TargetLimits = sdk.Limits{
	MaxRestorePoints:       MaxRestorePoints,
	MaxRestorePointsReason: maxRestorePointsReason,
}

// Plugin returns what ferry-plugin-vsphere serves: a source and a target,
// both of type "vsphere".
func Plugin() *sdk.Plugin {
	return &sdk.Plugin{
		Name:    "vsphere",
		Version: Version,
		Sources: map[string]sdk.Component[sdk.Source]{
			"vsphere": {
				Schema:       sourceSchema(),
				Capabilities: SourceCapabilities,
				Validate:     validateSource,
				New: func(ctx context.Context, cfg cty.Value) (sdk.Source, error) {
					c, err := decodeSource(cfg)
					if err != nil {
						return nil, err
					}
					return newSource(ctx, c, nil)
				},
			},
		},
		Targets: map[string]sdk.Component[sdk.Target]{
			"vsphere": {
				Schema:       targetSchema(),
				Capabilities: TargetCapabilities,
				Limits:       TargetLimits,
				Hardware:     sdk.VSphereHardware(false),
				Validate:     validateTarget,
				New: func(ctx context.Context, cfg cty.Value) (sdk.Target, error) {
					c, err := decodeTarget(cfg)
					if err != nil {
						return nil, err
					}
					return newTarget(ctx, c, nil)
				},
			},
		},
	}
}
