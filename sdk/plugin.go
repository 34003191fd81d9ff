package sdk

import (
	"context"
	"fmt"

	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/gocty"

	"github.com/ferry-dr/ferry/sdk/schema"
)

// Protocol versions. ProtocolMajor is negotiated by go-plugin at the
// handshake; ProtocolMinor grows when v1 gains messages or calls. Minor 1
// added VM folders and tags, Source.ListTags, and component limits; minor
// 2 added a replica's owner and incarnation, and independent disks; minor
// 3 added ProbeTransport (TransportProber); minor 4 added Prepare, the
// direct lane of replica disks that keep restore points (WritePreparer);
// minor 5 added test failover (TestFailoverer); minor 6 the direct lane of
// repository objects (ObjectLocator); minor 7 replica mapping
// (ReplicaMapper); minor 8 added the hardware model (VM.Hardware, each
// disk's bus and controller model, each NIC's model) and what a target
// builds (Component.Hardware); minor 9 failback (FailbackReader,
// FailbackWriter).
const (
	ProtocolMajor = 1
	ProtocolMinor = 9
)

// Plugin is what a plugin binary serves: its name, version and components,
// keyed by the type name users write in HCL (source "<type>" "<name>").
type Plugin struct {
	Name         string
	Version      string
	Sources      map[string]Component[Source]
	Targets      map[string]Component[Target]
	Repositories map[string]Component[Repository]
}

// Component describes one component type and builds its instances.
type Component[T any] struct {
	// Schema is the body of the component's configuration block.
	Schema *schema.Block
	// Capabilities are the optional features the component supports.
	Capabilities Capabilities
	// Limits are the bounds the component cannot go beyond (a Target's
	// MaxRestorePoints); the zero value means none.
	Limits Limits
	// Hardware is what virtual hardware a Target builds (protocol minor
	// 8); nil for other kinds and for a target that does not say, whose
	// replicas are asked for with the source's description unmapped.
	Hardware *HardwareSupport
	// Validate checks a decoded configuration without side effects and
	// without touching the network. It may be nil.
	Validate func(cfg cty.Value) schema.Diagnostics
	// New configures an instance. It may reach the endpoint; its errors are
	// operational, not configuration errors.
	New func(ctx context.Context, cfg cty.Value) (T, error)
}

// Validate checks the Plugin itself: a name, a version, at least one
// component, and schemas that describe HCL bodies.
func (p *Plugin) Validate() error {
	if p.Name == "" || p.Version == "" {
		return fmt.Errorf("plugin: name and version are required")
	}
	n := 0
	check := func(kind Kind, typ string, s *schema.Block, hasNew bool, lim Limits, hw *HardwareSupport) error {
		n++
		if hw != nil && kind != KindTarget {
			return fmt.Errorf("plugin %s: %s %q: only a target builds replicas; Hardware is for targets", p.Name, kind, typ)
		}
		if hw != nil {
			if err := hw.Validate(); err != nil {
				return fmt.Errorf("plugin %s: %s %q: %w", p.Name, kind, typ, err)
			}
		}
		if s == nil || !hasNew {
			return fmt.Errorf("plugin %s: %s %q needs a Schema and New", p.Name, kind, typ)
		}
		switch {
		case lim.MaxRestorePoints < 0:
			return fmt.Errorf("plugin %s: %s %q: MaxRestorePoints %d is negative", p.Name, kind, typ, lim.MaxRestorePoints)
		case lim.MaxRestorePoints > 0 && kind != KindTarget:
			return fmt.Errorf("plugin %s: %s %q: only a target keeps restore points; MaxRestorePoints is for targets", p.Name, kind, typ)
		case lim.MaxRestorePoints > 0 && lim.MaxRestorePointsReason == "":
			return fmt.Errorf("plugin %s: %s %q: MaxRestorePoints needs a MaxRestorePointsReason for the users who hit it", p.Name, kind, typ)
		}
		if err := s.Validate(); err != nil {
			return fmt.Errorf("plugin %s: %s %q schema: %w", p.Name, kind, typ, err)
		}
		return nil
	}
	for typ, c := range p.Sources {
		if err := check(KindSource, typ, c.Schema, c.New != nil, c.Limits, c.Hardware); err != nil {
			return err
		}
	}
	for typ, c := range p.Targets {
		if err := check(KindTarget, typ, c.Schema, c.New != nil, c.Limits, c.Hardware); err != nil {
			return err
		}
	}
	for typ, c := range p.Repositories {
		if err := check(KindRepository, typ, c.Schema, c.New != nil, c.Limits, c.Hardware); err != nil {
			return err
		}
	}
	if n == 0 {
		return fmt.Errorf("plugin %s: no components", p.Name)
	}
	return nil
}

// DecodeConfig copies a configuration value into a struct whose fields carry
// `cty:"name"` tags, one per attribute of the schema.
func DecodeConfig(cfg cty.Value, into any) error {
	if err := gocty.FromCtyValue(cfg, into); err != nil {
		return fmt.Errorf("decode configuration: %w", err)
	}
	return nil
}
