package sdk

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"sort"
	"time"

	"github.com/zclconf/go-cty/cty"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// Client is the host side of protocol v1: it talks to one plugin process
// and hands out its components as the same Go interfaces plugins implement.
// It is safe for concurrent use.
type Client struct {
	conn   grpc.ClientConnInterface
	opts   ClientOptions
	plugin pb.PluginClient
}

// ClientOptions tune a Client.
type ClientOptions struct {
	// Name names the plugin in error messages.
	Name string
	// Exited reports whether the plugin process has gone; with it, a call cut
	// by the process's death fails with errdefs.ErrPluginExited.
	Exited func() bool
	// NoDirect turns the direct data lane off: every disk is streamed over
	// gRPC even when the plugin offers a local path (for example when the
	// plugin runs on another machine).
	NoDirect bool
}

// NewClient returns a Client over an established connection.
func NewClient(conn grpc.ClientConnInterface, opts ClientOptions) *Client {
	if opts.Name == "" {
		opts.Name = "plugin"
	}
	return &Client{conn: conn, opts: opts, plugin: pb.NewPluginClient(conn)}
}

// Info is what a plugin says about itself.
type Info struct {
	Name          string
	Version       string
	ProtocolMajor int
	ProtocolMinor int
	Components    []ComponentInfo
}

// ComponentInfo describes one component a plugin serves.
type ComponentInfo struct {
	Kind         Kind
	Type         string
	Capabilities Capabilities
	Limits       Limits
	Schema       *schema.Block
	// Hardware is what a target builds (protocol minor 8); nil when it
	// does not say.
	Hardware *HardwareSupport
}

// Component returns the component of a kind and type, if served.
func (i *Info) Component(kind Kind, typ string) (ComponentInfo, bool) {
	for _, c := range i.Components {
		if c.Kind == kind && c.Type == typ {
			return c, true
		}
	}
	return ComponentInfo{}, false
}

func (c *Client) err(err error) error {
	return fromStatus(err, c.opts.Name, c.opts.Exited)
}

// Info asks the plugin for its name, version, protocol and components.
func (c *Client) Info(ctx context.Context) (*Info, error) {
	resp, err := c.plugin.GetInfo(ctx, &pb.Empty{})
	if err != nil {
		return nil, c.err(err)
	}
	info := &Info{Name: resp.GetName(), Version: resp.GetVersion(), ProtocolMajor: int(resp.GetProtocolMajor()), ProtocolMinor: int(resp.GetProtocolMinor())}
	for _, pc := range resp.GetComponents() {
		block, err := blockFromProto(pc.GetSchema().GetBlock())
		if err != nil {
			return nil, fmt.Errorf("plugin %s: %s %q: bad schema: %w", c.opts.Name, kindFromProto(pc.GetKind()), pc.GetType(), err)
		}
		info.Components = append(info.Components, ComponentInfo{Kind: kindFromProto(pc.GetKind()), Type: pc.GetType(), Capabilities: capsFromProto(pc.GetCapabilities()),
			Limits: limitsFromProto(pc.GetLimits()), Schema: block, Hardware: hardwareSupportFromProto(pc.GetHardware())})
	}
	sort.Slice(info.Components, func(i, j int) bool {
		a, b := info.Components[i], info.Components[j]
		return a.Kind < b.Kind || a.Kind == b.Kind && a.Type < b.Type
	})
	return info, nil
}

// Validate asks the plugin to check a configuration decoded against the
// component's schema. Diagnostics name attributes by path.
func (c *Client) Validate(ctx context.Context, kind Kind, typ string, s *schema.Block, cfg cty.Value) (schema.Diagnostics, error) {
	dv, err := valueToProto(cfg, s.ImpliedType())
	if err != nil {
		return nil, err
	}
	resp, err := c.plugin.Validate(ctx, &pb.ValidateRequest{Kind: kindToProto(kind), Type: typ, Config: dv})
	if err != nil {
		return nil, c.err(err)
	}
	return diagsFromProto(resp.GetDiagnostics()), nil
}

// configure creates an instance in the plugin; a configuration the plugin
// rejects comes back as diagnostics and an error.
func (c *Client) configure(ctx context.Context, kind Kind, typ string, s *schema.Block, cfg cty.Value) (string, schema.Diagnostics, error) {
	dv, err := valueToProto(cfg, s.ImpliedType())
	if err != nil {
		return "", nil, err
	}
	id := newID()
	resp, err := c.plugin.Configure(ctx, &pb.ConfigureRequest{Instance: id, Kind: kindToProto(kind), Type: typ, Config: dv, HostProtocolMinor: ProtocolMinor})
	if err != nil {
		return "", nil, c.err(err)
	}
	diags := diagsFromProto(resp.GetDiagnostics())
	if diags.HasErrors() {
		return "", diags, fmt.Errorf("configure %s %q: %w", kind, typ, diags.Err())
	}
	return id, diags, nil
}

// Source configures a source instance and returns it.
func (c *Client) Source(ctx context.Context, typ string, s *schema.Block, cfg cty.Value) (Source, schema.Diagnostics, error) {
	id, diags, err := c.configure(ctx, KindSource, typ, s, cfg)
	if err != nil {
		return nil, diags, err
	}
	return c.AttachSource(id), diags, nil
}

// Target configures a target instance and returns it.
func (c *Client) Target(ctx context.Context, typ string, s *schema.Block, cfg cty.Value) (Target, schema.Diagnostics, error) {
	id, diags, err := c.configure(ctx, KindTarget, typ, s, cfg)
	if err != nil {
		return nil, diags, err
	}
	return c.AttachTarget(id), diags, nil
}

// Repository configures a repository instance and returns it.
func (c *Client) Repository(ctx context.Context, typ string, s *schema.Block, cfg cty.Value) (Repository, schema.Diagnostics, error) {
	id, diags, err := c.configure(ctx, KindRepository, typ, s, cfg)
	if err != nil {
		return nil, diags, err
	}
	return c.AttachRepository(id), diags, nil
}

// Stop asks the plugin to drain its calls for at most drain and release
// everything. The caller ends the process afterwards.
func (c *Client) Stop(ctx context.Context, drain time.Duration) error {
	_, err := c.plugin.Stop(ctx, &pb.StopRequest{DrainMillis: drain.Milliseconds()})
	return c.err(err)
}

// instanceConn addresses every call to one instance.
type instanceConn struct {
	c  *Client
	id string
}

func (c *Client) instance(id string) *instanceConn { return &instanceConn{c: c, id: id} }

func (ic *instanceConn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	ctx = metadata.AppendToOutgoingContext(ctx, instanceKey, ic.id)
	return ic.c.conn.Invoke(ctx, method, args, reply, opts...)
}

func (ic *instanceConn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	ctx = metadata.AppendToOutgoingContext(ctx, instanceKey, ic.id)
	return ic.c.conn.NewStream(ctx, desc, method, opts...)
}

func (ic *instanceConn) err(err error) error { return ic.c.err(err) }

type remoteSource struct {
	in  *instanceConn
	rpc pb.SourceClient
}

var (
	_ Source          = (*remoteSource)(nil)
	_ TagLister       = (*remoteSource)(nil)
	_ TransportProber = (*remoteSource)(nil)
	_ TransportProber = (*remoteTarget)(nil)
)

// ProbeTransport implements TransportProber. A plugin built before
// protocol 1.3, or one that cannot say, answers errdefs.ErrUnimplemented.
func (r *remoteSource) ProbeTransport(ctx context.Context, vm string, disk int) (string, string, error) {
	resp, err := r.rpc.ProbeTransport(ctx, &pb.ProbeTransportRequest{Vm: vm, Disk: int32(disk)})
	if err != nil {
		return "", "", r.in.err(err)
	}
	return resp.GetMode(), resp.GetWhy(), nil
}

// ProbeTransport implements TransportProber, as remoteSource's does.
func (r *remoteTarget) ProbeTransport(ctx context.Context, replica string, disk int) (string, string, error) {
	resp, err := r.rpc.ProbeTransport(ctx, &pb.ProbeTransportRequest{Vm: replica, Disk: int32(disk)})
	if err != nil {
		return "", "", r.in.err(err)
	}
	return resp.GetMode(), resp.GetWhy(), nil
}

func (r *remoteSource) ListVMs(ctx context.Context) ([]VM, error) {
	resp, err := r.rpc.ListVMs(ctx, &pb.Empty{})
	if err != nil {
		return nil, r.in.err(err)
	}
	out := make([]VM, 0, len(resp.GetVms()))
	for _, v := range resp.GetVms() {
		out = append(out, vmFromProto(v))
	}
	return out, nil
}

// ListTags implements TagLister. A plugin built before protocol 1.1 does not
// know the call and answers errdefs.ErrUnimplemented.
func (r *remoteSource) ListTags(ctx context.Context) ([]string, error) {
	resp, err := r.rpc.ListTags(ctx, &pb.Empty{})
	if err != nil {
		return nil, r.in.err(err)
	}
	return resp.GetTags(), nil
}

func (r *remoteSource) DescribeVM(ctx context.Context, vm string) (*VM, error) {
	resp, err := r.rpc.DescribeVM(ctx, &pb.VMRequest{Vm: vm})
	if err != nil {
		return nil, r.in.err(err)
	}
	v := vmFromProto(resp)
	return &v, nil
}

func (r *remoteSource) CreateSnapshot(ctx context.Context, req SnapshotRequest) (*Snapshot, error) {
	resp, err := r.rpc.CreateSnapshot(ctx, &pb.CreateSnapshotRequest{Vm: req.VM, Name: req.Name, Quiesce: req.Quiesce})
	if err != nil {
		return nil, r.in.err(err)
	}
	s := snapshotFromProto(resp)
	return &s, nil
}

func (r *remoteSource) RemoveSnapshot(ctx context.Context, vm, snapshot string) error {
	_, err := r.rpc.RemoveSnapshot(ctx, &pb.SnapshotRequest{Vm: vm, Snapshot: snapshot})
	return r.in.err(err)
}

func (r *remoteSource) ListSnapshots(ctx context.Context, vm string) ([]Snapshot, error) {
	resp, err := r.rpc.ListSnapshots(ctx, &pb.VMRequest{Vm: vm})
	if err != nil {
		return nil, r.in.err(err)
	}
	out := make([]Snapshot, 0, len(resp.GetSnapshots()))
	for _, s := range resp.GetSnapshots() {
		out = append(out, snapshotFromProto(s))
	}
	return out, nil
}

func (r *remoteSource) ChangedAreas(ctx context.Context, req ChangedAreasRequest, fn func([]Extent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.rpc.ChangedAreas(ctx, &pb.ChangedAreasRequest{Vm: req.VM, Snapshot: req.Snapshot, Disk: int32(req.Disk), ChangeId: req.ChangeID})
	if err != nil {
		return r.in.err(err)
	}
	for {
		batch, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return r.in.err(err)
		}
		if err := fn(extentsFromProto(batch.GetExtents())); err != nil {
			return err
		}
	}
}

func (r *remoteSource) OpenSnapshotDisk(ctx context.Context, vm, snapshot string, disk int) (DiskReader, error) {
	h, err := r.rpc.OpenSnapshotDisk(ctx, &pb.OpenSnapshotDiskRequest{Vm: vm, Snapshot: snapshot, Disk: int32(disk)})
	if err != nil {
		return nil, r.in.err(err)
	}
	return r.in.c.openReader(h)
}

type remoteTarget struct {
	in  *instanceConn
	rpc pb.TargetClient
}

func (r *remoteTarget) GetPlacement(ctx context.Context) (*Placement, error) {
	resp, err := r.rpc.GetPlacement(ctx, &pb.Empty{})
	if err != nil {
		return nil, r.in.err(err)
	}
	return &Placement{Hosts: resp.GetHosts(), Datastores: resp.GetDatastores(), Networks: resp.GetNetworks(), Folders: resp.GetFolders()}, nil
}

func (r *remoteTarget) replica(resp *pb.Replica, err error) (*Replica, error) {
	if err != nil {
		return nil, r.in.err(err)
	}
	return replicaFromProto(resp), nil
}

func (r *remoteTarget) CreateReplica(ctx context.Context, req ReplicaRequest) (*Replica, error) {
	return r.replica(r.rpc.CreateReplica(ctx, &pb.CreateReplicaRequest{Name: req.Name, Vm: vmToProto(&req.VM), NetworkMap: netMapToProto(req.NetworkMap), Owner: ownerToProto(req.Owner)}))
}

var _ ReplicaMapper = (*remoteTarget)(nil)

// MapReplica implements ReplicaMapper. A plugin built before protocol
// 1.7, or a target without the MapReplicas capability, answers
// errdefs.ErrUnimplemented; hosts check the capability first.
func (r *remoteTarget) MapReplica(ctx context.Context, req ReplicaRequest) (*Replica, error) {
	return r.replica(r.rpc.MapReplica(ctx, &pb.CreateReplicaRequest{Name: req.Name, Vm: vmToProto(&req.VM), NetworkMap: netMapToProto(req.NetworkMap), Owner: ownerToProto(req.Owner)}))
}

func (r *remoteTarget) GetReplica(ctx context.Context, replica string) (*Replica, error) {
	return r.replica(r.rpc.GetReplica(ctx, &pb.ReplicaRequest{Replica: replica}))
}

func (r *remoteTarget) ListReplicas(ctx context.Context) ([]Replica, error) {
	resp, err := r.rpc.ListReplicas(ctx, &pb.Empty{})
	if err != nil {
		return nil, r.in.err(err)
	}
	out := make([]Replica, 0, len(resp.GetReplicas()))
	for _, x := range resp.GetReplicas() {
		out = append(out, *replicaFromProto(x))
	}
	return out, nil
}

func (r *remoteTarget) DeleteReplica(ctx context.Context, replica string) error {
	_, err := r.rpc.DeleteReplica(ctx, &pb.ReplicaRequest{Replica: replica})
	return r.in.err(err)
}

func (r *remoteTarget) OpenReplicaDisk(ctx context.Context, replica string, disk int, size int64) (DiskWriter, error) {
	h, err := r.rpc.OpenReplicaDisk(ctx, &pb.OpenReplicaDiskRequest{Replica: replica, Disk: int32(disk), Size: size, Prepares: !r.in.c.opts.NoDirect})
	if err != nil {
		return nil, r.in.err(err)
	}
	return r.in.c.openWriter(h)
}

func (r *remoteTarget) CreateRestorePoint(ctx context.Context, replica string, labels map[string]string) (*RestorePoint, error) {
	resp, err := r.rpc.CreateRestorePoint(ctx, &pb.CreateRestorePointRequest{Replica: replica, Labels: labels})
	if err != nil {
		return nil, r.in.err(err)
	}
	p := pointFromProto(resp)
	return &p, nil
}

func (r *remoteTarget) ListRestorePoints(ctx context.Context, replica string) ([]RestorePoint, error) {
	resp, err := r.rpc.ListRestorePoints(ctx, &pb.ReplicaRequest{Replica: replica})
	if err != nil {
		return nil, r.in.err(err)
	}
	out := make([]RestorePoint, 0, len(resp.GetPoints()))
	for _, p := range resp.GetPoints() {
		out = append(out, pointFromProto(p))
	}
	return out, nil
}

func (r *remoteTarget) DeleteRestorePoint(ctx context.Context, replica, point string) error {
	_, err := r.rpc.DeleteRestorePoint(ctx, &pb.RestorePointRequest{Replica: replica, Point: point})
	return r.in.err(err)
}

func (r *remoteTarget) OpenRestorePointDisk(ctx context.Context, replica, point string, disk int) (DiskReader, error) {
	h, err := r.rpc.OpenRestorePointDisk(ctx, &pb.OpenRestorePointDiskRequest{Replica: replica, Point: point, Disk: int32(disk)})
	if err != nil {
		return nil, r.in.err(err)
	}
	return r.in.c.openReader(h)
}

func (r *remoteTarget) Failover(ctx context.Context, req FailoverRequest) (*Replica, error) {
	return r.replica(r.rpc.Failover(ctx, &pb.FailoverRequest{Replica: req.Replica, Point: req.Point, Network: netConfigToProto(req.Network)}))
}

func (r *remoteTarget) UndoFailover(ctx context.Context, replica string) (*Replica, error) {
	return r.replica(r.rpc.UndoFailover(ctx, &pb.ReplicaRequest{Replica: replica}))
}

func (r *remoteTarget) CommitFailover(ctx context.Context, replica string) (*Replica, error) {
	return r.replica(r.rpc.CommitFailover(ctx, &pb.ReplicaRequest{Replica: replica}))
}

func (r *remoteTarget) ApplyNetwork(ctx context.Context, replica string, net NetworkConfig) (*Replica, error) {
	return r.replica(r.rpc.ApplyNetwork(ctx, &pb.ApplyNetworkRequest{Replica: replica, Network: netConfigToProto(net)}))
}

type remoteRepository struct {
	in  *instanceConn
	rpc pb.RepositoryClient
}

var _ Repository = (*remoteRepository)(nil)

func (r *remoteRepository) Put(ctx context.Context, key string, data []byte, ifGeneration int64) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.rpc.Put(ctx)
	if err != nil {
		return 0, r.in.err(err)
	}
	hdr := &pb.PutMessage_Header{Key: key, IfGeneration: ifGeneration, Size: int64(len(data))}
	if err := stream.Send(&pb.PutMessage{Msg: &pb.PutMessage_Header_{Header: hdr}}); err != nil {
		return 0, r.in.err(closeSendErr(stream, err))
	}
	for len(data) > 0 {
		n := min(len(data), defaultChunkBytes)
		if err := stream.Send(&pb.PutMessage{Msg: &pb.PutMessage_Data{Data: data[:n]}}); err != nil {
			return 0, r.in.err(closeSendErr(stream, err))
		}
		data = data[n:]
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return 0, r.in.err(err)
	}
	return resp.GetGeneration(), nil
}

// closeSendErr returns the server's real error when a send fails because
// the server already ended the call (gRPC reports io.EOF on Send then).
func closeSendErr[Req, Resp any](stream grpc.ClientStreamingClient[Req, Resp], err error) error {
	if errors.Is(err, io.EOF) {
		if _, rerr := stream.CloseAndRecv(); rerr != nil {
			return rerr
		}
	}
	return err
}

// Get reads an object. A plugin on this machine may say which file holds
// it (ObjectLocator): the object is then read from there, and asked for
// again through the stream when the file no longer holds it (replaced by
// a put since, or damaged: the plugin then reports which).
func (r *remoteRepository) Get(ctx context.Context, key string) ([]byte, ObjectInfo, error) {
	direct := !r.in.c.opts.NoDirect
	for {
		data, info, file, err := r.get(ctx, key, direct)
		if file == nil || err != nil {
			return data, info, err
		}
		if data, ok := readObjectFile(file); ok {
			return data, objectFromProto(file.GetInfo()), nil
		}
		direct = false
	}
}

// readObjectFile reads the data an ObjectFile names, and reports whether
// it is there whole and matches its checksum.
func readObjectFile(file *pb.ObjectFile) ([]byte, bool) {
	size := file.GetInfo().GetSize()
	if size < 0 || file.GetOffset() < 0 || size > maxDirectObject {
		return nil, false
	}
	f, err := os.Open(file.GetPath())
	if err != nil {
		return nil, false
	}
	defer f.Close()
	data := make([]byte, size)
	if n, _ := f.ReadAt(data, file.GetOffset()); int64(n) != size {
		return nil, false
	}
	return data, crc32.Checksum(data, castagnoli) == file.GetCrc32C()
}

// maxDirectObject bounds what the host reads of a file a plugin names: a
// larger object comes through the stream, which holds its own limits.
const maxDirectObject = 1 << 30

func (r *remoteRepository) get(ctx context.Context, key string, direct bool) ([]byte, ObjectInfo, *pb.ObjectFile, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.rpc.Get(ctx, &pb.GetRequest{Key: key, Direct: direct})
	if err != nil {
		return nil, ObjectInfo{}, nil, r.in.err(err)
	}
	var info ObjectInfo
	var data []byte
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, ObjectInfo{}, nil, r.in.err(err)
		}
		switch msg := m.GetMsg().(type) {
		case *pb.GetMessage_File:
			if !direct {
				return nil, ObjectInfo{}, nil, fmt.Errorf("get %q: the plugin named a file it was not asked for", key)
			}
			return nil, ObjectInfo{}, msg.File, nil
		case *pb.GetMessage_Info:
			info = objectFromProto(msg.Info)
			data = make([]byte, 0, info.Size)
		case *pb.GetMessage_Data:
			if len(data) == 0 && int64(len(msg.Data)) == info.Size {
				data = msg.Data // the whole object in one message: no copy
				continue
			}
			data = append(data, msg.Data...)
		}
	}
	if int64(len(data)) != info.Size {
		return nil, ObjectInfo{}, nil, fmt.Errorf("get %q: received %d bytes of %d: %w", key, len(data), info.Size, errdefs.ErrUnavailable)
	}
	if data == nil {
		data = []byte{}
	}
	return data, info, nil, nil
}

func (r *remoteRepository) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	resp, err := r.rpc.List(ctx, &pb.ListRequest{Prefix: prefix})
	if err != nil {
		return nil, r.in.err(err)
	}
	out := make([]ObjectInfo, 0, len(resp.GetObjects()))
	for _, o := range resp.GetObjects() {
		out = append(out, objectFromProto(o))
	}
	return out, nil
}

func (r *remoteRepository) Delete(ctx context.Context, key string, ifGeneration int64) error {
	_, err := r.rpc.Delete(ctx, &pb.DeleteRequest{Key: key, IfGeneration: ifGeneration})
	return r.in.err(err)
}

var _ TestFailoverer = (*remoteTarget)(nil)

// StartTest implements TestFailoverer. A plugin built before protocol 1.5,
// or a target without the TestFailover capability, answers
// errdefs.ErrUnimplemented; hosts check the capability first.
func (r *remoteTarget) StartTest(ctx context.Context, req TestRequest) (*TestVM, error) {
	resp, err := r.rpc.StartTest(ctx, &pb.StartTestRequest{Id: req.ID, Replica: req.Replica, Point: req.Point, Network: netConfigToProto(req.Network), Labels: req.Labels})
	if err != nil {
		return nil, r.in.err(err)
	}
	v := testFromProto(resp)
	return &v, nil
}

// ListTests implements TestFailoverer.
func (r *remoteTarget) ListTests(ctx context.Context) ([]TestVM, error) {
	resp, err := r.rpc.ListTests(ctx, &pb.Empty{})
	if err != nil {
		return nil, r.in.err(err)
	}
	out := make([]TestVM, 0, len(resp.GetTests()))
	for _, v := range resp.GetTests() {
		out = append(out, testFromProto(v))
	}
	return out, nil
}

// OpenTestDisk implements TestFailoverer.
func (r *remoteTarget) OpenTestDisk(ctx context.Context, id string, disk int) (DiskReader, error) {
	h, err := r.rpc.OpenTestDisk(ctx, &pb.OpenTestDiskRequest{Id: id, Disk: int32(disk)})
	if err != nil {
		return nil, r.in.err(err)
	}
	return r.in.c.openReader(h)
}

// StopTest implements TestFailoverer.
func (r *remoteTarget) StopTest(ctx context.Context, id string) error {
	_, err := r.rpc.StopTest(ctx, &pb.TestRequest{Id: id})
	return r.in.err(err)
}

var (
	_ FailbackReader = (*remoteTarget)(nil)
	_ FailbackWriter = (*remoteSource)(nil)
)

// FailedOverChanges implements FailbackReader. A plugin built before
// protocol 1.9, or a target without the Failback capability, answers
// errdefs.ErrUnimplemented; hosts check the capability first.
func (r *remoteTarget) FailedOverChanges(ctx context.Context, req FailedOverChangesRequest, fn func([]Extent) error) (string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := r.rpc.FailedOverChanges(ctx, &pb.FailedOverChangesRequest{Replica: req.Replica, Disk: int32(req.Disk), Since: req.Since})
	if err != nil {
		return "", r.in.err(err)
	}
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return "", fmt.Errorf("changes of replica %q disk %d since failover: the plugin sent no mark: %w", req.Replica, req.Disk, errdefs.ErrDataLoss)
		}
		if err != nil {
			return "", r.in.err(err)
		}
		if ext := msg.GetExtents(); len(ext) > 0 {
			if err := fn(extentsFromProto(ext)); err != nil {
				return "", err
			}
		}
		if m := msg.GetMark(); m != "" {
			return m, nil
		}
	}
}

// OpenFailedOverDisk implements FailbackReader.
func (r *remoteTarget) OpenFailedOverDisk(ctx context.Context, replica string, disk int) (DiskReader, error) {
	h, err := r.rpc.OpenFailedOverDisk(ctx, &pb.OpenFailedOverDiskRequest{Replica: replica, Disk: int32(disk)})
	if err != nil {
		return nil, r.in.err(err)
	}
	return r.in.c.openReader(h)
}

// SetReplicaPower implements FailbackReader.
func (r *remoteTarget) SetReplicaPower(ctx context.Context, replica string, on bool) (*Replica, error) {
	return r.replica(r.rpc.SetReplicaPower(ctx, &pb.SetReplicaPowerRequest{Replica: replica, On: on}))
}

// BeginFailback implements FailbackWriter. A plugin built before protocol
// 1.9, or a source without the Failback capability, answers
// errdefs.ErrUnimplemented; hosts check the capability first.
func (r *remoteSource) BeginFailback(ctx context.Context, req FailbackRequest) (*VM, error) {
	pr := &pb.BeginFailbackRequest{Id: req.ID, Vm: req.VM}
	if req.Create != nil {
		pr.Create = vmToProto(req.Create)
	}
	resp, err := r.rpc.BeginFailback(ctx, pr)
	if err != nil {
		return nil, r.in.err(err)
	}
	v := vmFromProto(resp)
	return &v, nil
}

// OpenFailbackDisk implements FailbackWriter. Its writes go through the
// plugin's stream: the plugin saves what each one overwrites first.
func (r *remoteSource) OpenFailbackDisk(ctx context.Context, vm, id string, disk int, size int64) (DiskWriter, error) {
	h, err := r.rpc.OpenFailbackDisk(ctx, &pb.OpenFailbackDiskRequest{Vm: vm, Id: id, Disk: int32(disk), Size: size})
	if err != nil {
		return nil, r.in.err(err)
	}
	return r.in.c.openWriter(h)
}

// StartFailback implements FailbackWriter.
func (r *remoteSource) StartFailback(ctx context.Context, vm, id string) (*VM, error) {
	resp, err := r.rpc.StartFailback(ctx, &pb.FailbackVMRequest{Vm: vm, Id: id})
	if err != nil {
		return nil, r.in.err(err)
	}
	v := vmFromProto(resp)
	return &v, nil
}

// UndoFailback implements FailbackWriter.
func (r *remoteSource) UndoFailback(ctx context.Context, vm, id string) error {
	_, err := r.rpc.UndoFailback(ctx, &pb.FailbackVMRequest{Vm: vm, Id: id})
	return r.in.err(err)
}

// CommitFailback implements FailbackWriter.
func (r *remoteSource) CommitFailback(ctx context.Context, vm, id string) error {
	_, err := r.rpc.CommitFailback(ctx, &pb.FailbackVMRequest{Vm: vm, Id: id})
	return r.in.err(err)
}
