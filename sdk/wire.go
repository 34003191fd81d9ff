package sdk

import (
	"fmt"
	"sort"
	"time"

	"github.com/zclconf/go-cty/cty"
	ctyjson "github.com/zclconf/go-cty/cty/json"
	"github.com/zclconf/go-cty/cty/msgpack"

	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// This file converts between the Go types of the SDK and their protocol v1
// messages. Conversions are total: every field of one side has a place on
// the other.

func kindToProto(k Kind) pb.Kind {
	switch k {
	case KindSource:
		return pb.Kind_SOURCE
	case KindTarget:
		return pb.Kind_TARGET
	case KindRepository:
		return pb.Kind_REPOSITORY
	}
	return pb.Kind_KIND_UNSPECIFIED
}

func kindFromProto(k pb.Kind) Kind {
	switch k {
	case pb.Kind_SOURCE:
		return KindSource
	case pb.Kind_TARGET:
		return KindTarget
	case pb.Kind_REPOSITORY:
		return KindRepository
	}
	return ""
}

func capsToProto(c Capabilities) *pb.Capabilities {
	return &pb.Capabilities{ChangeTracking: c.ChangeTracking, DirectData: c.DirectData, Quiesce: c.Quiesce, ReIp: c.ReIP, Folders: c.Folders, Tags: c.Tags, TestFailover: c.TestFailover, MapReplicas: c.MapReplicas, Failback: c.Failback}
}

func capsFromProto(c *pb.Capabilities) Capabilities {
	return Capabilities{ChangeTracking: c.GetChangeTracking(), DirectData: c.GetDirectData(), Quiesce: c.GetQuiesce(), ReIP: c.GetReIp(),
		Folders: c.GetFolders(), Tags: c.GetTags(), TestFailover: c.GetTestFailover(), MapReplicas: c.GetMapReplicas(), Failback: c.GetFailback()}
}

func limitsToProto(l Limits) *pb.Limits {
	return &pb.Limits{MaxRestorePoints: uint32(l.MaxRestorePoints), MaxRestorePointsReason: l.MaxRestorePointsReason}
}

func limitsFromProto(l *pb.Limits) Limits {
	return Limits{MaxRestorePoints: int(l.GetMaxRestorePoints()), MaxRestorePointsReason: l.GetMaxRestorePointsReason()}
}

func blockToProto(b *schema.Block) (*pb.Block, error) {
	out := &pb.Block{Description: b.Description}
	for _, name := range sortedNames(b.Attributes) {
		a := b.Attributes[name]
		typ, err := ctyjson.MarshalType(a.Type)
		if err != nil {
			return nil, fmt.Errorf("attribute %q: %w", name, err)
		}
		out.Attributes = append(out.Attributes, &pb.Attribute{Name: name, Type: typ, Required: a.Required, Sensitive: a.Sensitive, Path: a.Path, Description: a.Description})
	}
	for _, name := range sortedNames(b.Blocks) {
		nb := b.Blocks[name]
		inner, err := blockToProto(&nb.Block)
		if err != nil {
			return nil, fmt.Errorf("block %q: %w", name, err)
		}
		nesting := pb.NestedBlock_SINGLE
		if nb.Nesting == schema.NestingList {
			nesting = pb.NestedBlock_LIST
		}
		out.Blocks = append(out.Blocks, &pb.NestedBlock{TypeName: name, Block: inner, Nesting: nesting, MinItems: int32(nb.MinItems), MaxItems: int32(nb.MaxItems)})
	}
	return out, nil
}

func blockFromProto(b *pb.Block) (*schema.Block, error) {
	out := &schema.Block{Description: b.GetDescription(), Attributes: map[string]*schema.Attribute{}, Blocks: map[string]*schema.NestedBlock{}}
	for _, a := range b.GetAttributes() {
		typ, err := ctyjson.UnmarshalType(a.GetType())
		if err != nil {
			return nil, fmt.Errorf("attribute %q: type: %w", a.GetName(), err)
		}
		out.Attributes[a.GetName()] = &schema.Attribute{Type: typ, Required: a.GetRequired(), Sensitive: a.GetSensitive(), Path: a.GetPath(), Description: a.GetDescription()}
	}
	for _, nb := range b.GetBlocks() {
		inner, err := blockFromProto(nb.GetBlock())
		if err != nil {
			return nil, fmt.Errorf("block %q: %w", nb.GetTypeName(), err)
		}
		nesting := schema.NestingSingle
		if nb.GetNesting() == pb.NestedBlock_LIST {
			nesting = schema.NestingList
		}
		out.Blocks[nb.GetTypeName()] = &schema.NestedBlock{Block: *inner, Nesting: nesting, MinItems: int(nb.GetMinItems()), MaxItems: int(nb.GetMaxItems())}
	}
	return out, out.Validate()
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func valueToProto(v cty.Value, ty cty.Type) (*pb.DynamicValue, error) {
	b, err := msgpack.Marshal(withNulls(v, ty), ty)
	if err != nil {
		return nil, fmt.Errorf("encode configuration: %w", err)
	}
	return &pb.DynamicValue{Msgpack: b}, nil
}

// withNulls gives v, an object, a null for each attribute of ty it lacks,
// as HCL leaves the attributes a configuration does not set: a host that
// builds a configuration in code names only what it sets, and a plugin's
// schema may grow an optional attribute since.
func withNulls(v cty.Value, ty cty.Type) cty.Value {
	if !ty.IsObjectType() || v.IsNull() || !v.IsKnown() || !v.Type().IsObjectType() {
		return v
	}
	attrs := make(map[string]cty.Value, len(ty.AttributeTypes()))
	for name := range v.Type().AttributeTypes() {
		attrs[name] = v.GetAttr(name)
	}
	for name, at := range ty.AttributeTypes() {
		if a, ok := attrs[name]; ok {
			attrs[name] = withNulls(a, at)
		} else {
			attrs[name] = cty.NullVal(at)
		}
	}
	return cty.ObjectVal(attrs)
}

func valueFromProto(dv *pb.DynamicValue, ty cty.Type) (cty.Value, error) {
	v, err := msgpack.Unmarshal(dv.GetMsgpack(), ty)
	if err != nil {
		return cty.NilVal, fmt.Errorf("decode configuration: %w", err)
	}
	return v, nil
}

func diagsToProto(ds schema.Diagnostics) []*pb.Diagnostic {
	out := make([]*pb.Diagnostic, 0, len(ds))
	for _, d := range ds {
		sev := pb.Diagnostic_ERROR
		if d.Severity == schema.Warning {
			sev = pb.Diagnostic_WARNING
		}
		pd := &pb.Diagnostic{Severity: sev, Summary: d.Summary, Detail: d.Detail}
		for _, step := range d.Path {
			switch s := step.(type) {
			case cty.GetAttrStep:
				pd.Path = append(pd.Path, &pb.PathStep{Step: &pb.PathStep_Attribute{Attribute: s.Name}})
			case cty.IndexStep:
				if s.Key.Type() == cty.String {
					pd.Path = append(pd.Path, &pb.PathStep{Step: &pb.PathStep_Key{Key: s.Key.AsString()}})
				} else if s.Key.Type() == cty.Number {
					i, _ := s.Key.AsBigFloat().Int64()
					pd.Path = append(pd.Path, &pb.PathStep{Step: &pb.PathStep_Index{Index: i}})
				}
			}
		}
		out = append(out, pd)
	}
	return out
}

func diagsFromProto(pds []*pb.Diagnostic) schema.Diagnostics {
	var out schema.Diagnostics
	for _, pd := range pds {
		d := schema.Diagnostic{Severity: schema.Error, Summary: pd.GetSummary(), Detail: pd.GetDetail()}
		if pd.GetSeverity() == pb.Diagnostic_WARNING {
			d.Severity = schema.Warning
		}
		for _, st := range pd.GetPath() {
			switch s := st.GetStep().(type) {
			case *pb.PathStep_Attribute:
				d.Path = d.Path.GetAttr(s.Attribute)
			case *pb.PathStep_Key:
				d.Path = d.Path.Index(cty.StringVal(s.Key))
			case *pb.PathStep_Index:
				d.Path = d.Path.Index(cty.NumberIntVal(s.Index))
			}
		}
		out = append(out, d)
	}
	return out
}

func vmToProto(v *VM) *pb.VM {
	if v == nil {
		return nil
	}
	out := &pb.VM{Id: v.ID, Name: v.Name, Cpus: int32(v.CPUs), MemoryMib: v.MemoryMiB, Firmware: v.Firmware,
		GuestOs: v.GuestOS, PowerState: v.PowerState, Attributes: v.Attributes, Folder: v.Folder, Tags: v.Tags,
		Hardware: hardwareToProto(v.Hardware)}
	for _, d := range v.Disks {
		out.Disks = append(out.Disks, &pb.Disk{Index: int32(d.Index), Name: d.Name, CapacityBytes: d.Capacity, Controller: d.Controller, Thin: d.Thin, Independent: d.Independent,
			Bus: string(d.Bus), ControllerModel: string(d.ControllerModel), ControllerNumber: int32(d.ControllerNumber), Unit: int32(d.Unit)})
	}
	for _, n := range v.NICs {
		out.Nics = append(out.Nics, &pb.NIC{Index: int32(n.Index), Network: n.Network, Mac: n.MAC, Addresses: n.Addresses, Gateway: n.Gateway, Dns: n.DNS, Model: string(n.Model)})
	}
	return out
}

// vmFromProto reads a VM and fills its hardware model from the older
// fields where the plugin that sent it left it empty (NormalizeHardware),
// so that a VM from a plugin older than minor 8 reads as a newer one's.
func vmFromProto(v *pb.VM) VM {
	out := VM{ID: v.GetId(), Name: v.GetName(), CPUs: int(v.GetCpus()), MemoryMiB: v.GetMemoryMib(), Firmware: v.GetFirmware(),
		GuestOS: v.GetGuestOs(), PowerState: v.GetPowerState(), Attributes: v.GetAttributes(), Folder: v.GetFolder(), Tags: v.GetTags(),
		Hardware: hardwareFromProto(v.GetHardware())}
	for _, d := range v.GetDisks() {
		out.Disks = append(out.Disks, Disk{Index: int(d.GetIndex()), Name: d.GetName(), Capacity: d.GetCapacityBytes(), Controller: d.GetController(), Thin: d.GetThin(), Independent: d.GetIndependent(),
			Bus: Bus(d.GetBus()), ControllerModel: ControllerModel(d.GetControllerModel()), ControllerNumber: int(d.GetControllerNumber()), Unit: int(d.GetUnit())})
	}
	for _, n := range v.GetNics() {
		out.NICs = append(out.NICs, NIC{Index: int(n.GetIndex()), Network: n.GetNetwork(), MAC: n.GetMac(), Addresses: n.GetAddresses(), Gateway: n.GetGateway(), DNS: n.GetDns(),
			Model: NICModel(n.GetModel())})
	}
	NormalizeHardware(&out)
	return out
}

func hardwareToProto(h Hardware) *pb.Hardware {
	out := &pb.Hardware{Firmware: h.Firmware, SecureBoot: h.SecureBoot, SecureBootTemplate: h.SecureBootTemplate, Tpm: h.TPM,
		Generation: int32(h.Generation), GuestFamily: string(h.GuestFamily)}
	for _, b := range h.BootOrder {
		out.BootOrder = append(out.BootOrder, &pb.BootDevice{Kind: b.Kind, Index: int32(b.Index)})
	}
	return out
}

func hardwareFromProto(h *pb.Hardware) Hardware {
	out := Hardware{Firmware: h.GetFirmware(), SecureBoot: h.GetSecureBoot(), SecureBootTemplate: h.GetSecureBootTemplate(), TPM: h.GetTpm(),
		Generation: int(h.GetGeneration()), GuestFamily: GuestFamily(h.GetGuestFamily())}
	for _, b := range h.GetBootOrder() {
		out.BootOrder = append(out.BootOrder, BootDevice{Kind: b.GetKind(), Index: int(b.GetIndex())})
	}
	return out
}

func hardwareSupportToProto(h *HardwareSupport) *pb.HardwareSupport {
	if h == nil {
		return nil
	}
	out := &pb.HardwareSupport{AsGiven: h.AsGiven}
	for _, p := range h.Profiles {
		pp := &pb.HardwareProfile{Firmware: p.Firmware, Generation: int32(p.Generation), SecureBoot: p.SecureBoot,
			SecureBootTemplates: p.SecureBootTemplates, Tpm: p.TPM}
		for _, c := range p.Controllers {
			pc := &pb.ControllerSupport{Bus: string(c.Bus), Model: string(c.Model), Controllers: int32(c.Controllers), Units: int32(c.Units)}
			for _, r := range c.Reserved {
				pc.Reserved = append(pc.Reserved, int32(r))
			}
			pp.Controllers = append(pp.Controllers, pc)
		}
		for _, b := range p.BootBuses {
			pp.BootBuses = append(pp.BootBuses, string(b))
		}
		for _, m := range p.NICModels {
			pp.NicModels = append(pp.NicModels, string(m))
		}
		out.Profiles = append(out.Profiles, pp)
	}
	return out
}

func hardwareSupportFromProto(h *pb.HardwareSupport) *HardwareSupport {
	if h == nil {
		return nil
	}
	out := &HardwareSupport{AsGiven: h.GetAsGiven()}
	for _, pp := range h.GetProfiles() {
		p := HardwareProfile{Firmware: pp.GetFirmware(), Generation: int(pp.GetGeneration()), SecureBoot: pp.GetSecureBoot(),
			SecureBootTemplates: pp.GetSecureBootTemplates(), TPM: pp.GetTpm()}
		for _, pc := range pp.GetControllers() {
			c := ControllerSupport{Bus: Bus(pc.GetBus()), Model: ControllerModel(pc.GetModel()), Controllers: int(pc.GetControllers()), Units: int(pc.GetUnits())}
			for _, r := range pc.GetReserved() {
				c.Reserved = append(c.Reserved, int(r))
			}
			p.Controllers = append(p.Controllers, c)
		}
		for _, b := range pp.GetBootBuses() {
			p.BootBuses = append(p.BootBuses, Bus(b))
		}
		for _, m := range pp.GetNicModels() {
			p.NICModels = append(p.NICModels, NICModel(m))
		}
		out.Profiles = append(out.Profiles, p)
	}
	return out
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func snapDisksToProto(ds []SnapshotDisk) []*pb.SnapshotDisk {
	out := make([]*pb.SnapshotDisk, 0, len(ds))
	for _, d := range ds {
		out = append(out, &pb.SnapshotDisk{Index: int32(d.Index), CapacityBytes: d.Capacity, ChangeId: d.ChangeID})
	}
	return out
}

func snapDisksFromProto(ds []*pb.SnapshotDisk) []SnapshotDisk {
	out := make([]SnapshotDisk, 0, len(ds))
	for _, d := range ds {
		out = append(out, SnapshotDisk{Index: int(d.GetIndex()), Capacity: d.GetCapacityBytes(), ChangeID: d.GetChangeId()})
	}
	return out
}

func snapshotToProto(s *Snapshot) *pb.Snapshot {
	return &pb.Snapshot{Id: s.ID, Vm: s.VM, Name: s.Name, CreatedUnixNano: unixNano(s.Created), Quiesced: s.Quiesced, Disks: snapDisksToProto(s.Disks)}
}

func snapshotFromProto(s *pb.Snapshot) Snapshot {
	return Snapshot{ID: s.GetId(), VM: s.GetVm(), Name: s.GetName(), Created: fromUnixNano(s.GetCreatedUnixNano()), Quiesced: s.GetQuiesced(), Disks: snapDisksFromProto(s.GetDisks())}
}

var replicaStates = map[ReplicaState]pb.Replica_State{
	ReplicaReady: pb.Replica_READY, ReplicaFailedOver: pb.Replica_FAILED_OVER, ReplicaCommitted: pb.Replica_COMMITTED,
}

func replicaToProto(r *Replica) *pb.Replica {
	return &pb.Replica{Id: r.ID, Name: r.Name, SourceVm: r.SourceVM, Vm: vmToProto(&r.VM), State: replicaStates[r.State], FailoverPoint: r.FailoverPoint,
		Incarnation: r.Incarnation, Owner: ownerToProto(r.Owner)}
}

func replicaFromProto(r *pb.Replica) *Replica {
	out := &Replica{ID: r.GetId(), Name: r.GetName(), SourceVM: r.GetSourceVm(), VM: vmFromProto(r.GetVm()), FailoverPoint: r.GetFailoverPoint(),
		Incarnation: r.GetIncarnation(), Owner: ownerFromProto(r.GetOwner())}
	for s, p := range replicaStates {
		if p == r.GetState() {
			out.State = s
		}
	}
	return out
}

func pointToProto(p *RestorePoint) *pb.RestorePoint {
	return &pb.RestorePoint{Id: p.ID, Replica: p.Replica, CreatedUnixNano: unixNano(p.Created), SizeBytes: p.Size, Labels: p.Labels, Disks: snapDisksToProto(p.Disks)}
}

func pointFromProto(p *pb.RestorePoint) RestorePoint {
	return RestorePoint{ID: p.GetId(), Replica: p.GetReplica(), Created: fromUnixNano(p.GetCreatedUnixNano()), Size: p.GetSizeBytes(), Labels: p.GetLabels(), Disks: snapDisksFromProto(p.GetDisks())}
}

func netMapToProto(m []NetworkMapping) []*pb.NetworkMapping {
	out := make([]*pb.NetworkMapping, 0, len(m))
	for _, x := range m {
		out = append(out, &pb.NetworkMapping{From: x.From, To: x.To})
	}
	return out
}

func netMapFromProto(m []*pb.NetworkMapping) []NetworkMapping {
	var out []NetworkMapping
	for _, x := range m {
		out = append(out, NetworkMapping{From: x.GetFrom(), To: x.GetTo()})
	}
	return out
}

func netConfigToProto(n NetworkConfig) *pb.NetworkConfig {
	out := &pb.NetworkConfig{NetworkMap: netMapToProto(n.NetworkMap)}
	for _, r := range n.ReIP {
		out.ReIp = append(out.ReIp, &pb.ReIPRule{FromSubnet: r.FromSubnet, ToSubnet: r.ToSubnet, Gateway: r.Gateway, Dns: r.DNS})
	}
	return out
}

func netConfigFromProto(n *pb.NetworkConfig) NetworkConfig {
	out := NetworkConfig{NetworkMap: netMapFromProto(n.GetNetworkMap())}
	for _, r := range n.GetReIp() {
		out.ReIP = append(out.ReIP, ReIPRule{FromSubnet: r.GetFromSubnet(), ToSubnet: r.GetToSubnet(), Gateway: r.GetGateway(), DNS: r.GetDns()})
	}
	return out
}

func extentsToProto(es []Extent) []*pb.Extent {
	out := make([]*pb.Extent, len(es))
	for i, e := range es {
		out[i] = &pb.Extent{Offset: e.Offset, Length: e.Length}
	}
	return out
}

func extentsFromProto(es []*pb.Extent) []Extent {
	out := make([]Extent, len(es))
	for i, e := range es {
		out[i] = Extent{Offset: e.GetOffset(), Length: e.GetLength()}
	}
	return out
}

func objectFromProto(o *pb.ObjectInfo) ObjectInfo {
	return ObjectInfo{Key: o.GetKey(), Generation: o.GetGeneration(), Size: o.GetSize(), Modified: fromUnixNano(o.GetModifiedUnixNano())}
}

func objectToProto(o ObjectInfo) *pb.ObjectInfo {
	return &pb.ObjectInfo{Key: o.Key, Generation: o.Generation, Size: o.Size, ModifiedUnixNano: unixNano(o.Modified)}
}

func ownerToProto(o ReplicaOwner) *pb.ReplicaOwner {
	if o.IsZero() {
		return nil
	}
	return &pb.ReplicaOwner{Job: o.Job, Source: o.Source, SourceVm: o.SourceVM}
}

func ownerFromProto(o *pb.ReplicaOwner) ReplicaOwner {
	return ReplicaOwner{Job: o.GetJob(), Source: o.GetSource(), SourceVM: o.GetSourceVm()}
}

func testToProto(v *TestVM) *pb.TestVM {
	return &pb.TestVM{Id: v.ID, Replica: v.Replica, Point: v.Point, StartedUnixNano: unixNano(v.Started), Running: v.Running, Vm: vmToProto(&v.VM), Labels: v.Labels}
}

func testFromProto(v *pb.TestVM) TestVM {
	return TestVM{ID: v.GetId(), Replica: v.GetReplica(), Point: v.GetPoint(), Started: fromUnixNano(v.GetStartedUnixNano()), Running: v.GetRunning(),
		VM: vmFromProto(v.GetVm()), Labels: v.GetLabels()}
}
