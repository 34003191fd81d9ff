package sdk

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	pb "github.com/ferry-dr/ferry/sdk/proto/ferry/plugin/v1"
)

// extentsPerBatch bounds one ExtentBatch message (16 bytes an extent on the
// wire, so about 1 MiB).
const extentsPerBatch = 64 << 10

type sourceService struct {
	pb.UnimplementedSourceServer
	s *Server
}

func (ss *sourceService) src(ctx context.Context) (Source, error) {
	in, err := ss.s.lookup(ctx, KindSource)
	if err != nil {
		return nil, err
	}
	return in.src, nil
}

func (ss *sourceService) ListVMs(ctx context.Context, _ *pb.Empty) (*pb.ListVMsResponse, error) {
	src, err := ss.src(ctx)
	if err != nil {
		return nil, err
	}
	vms, err := src.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListVMsResponse{}
	for i := range vms {
		resp.Vms = append(resp.Vms, vmToProto(&vms[i]))
	}
	return resp, nil
}

func (ss *sourceService) ListTags(ctx context.Context, _ *pb.Empty) (*pb.ListTagsResponse, error) {
	in, err := ss.s.lookup(ctx, KindSource)
	if err != nil {
		return nil, err
	}
	tl, ok := in.src.(TagLister)
	if !ok {
		return nil, fmt.Errorf("source %q of plugin %s does not list tags: %w", in.typ, ss.s.p.Name, errdefs.ErrUnimplemented)
	}
	tags, err := tl.ListTags(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.ListTagsResponse{Tags: tags}, nil
}

func (ss *sourceService) ProbeTransport(ctx context.Context, req *pb.ProbeTransportRequest) (*pb.ProbeTransportResponse, error) {
	in, err := ss.s.lookup(ctx, KindSource)
	if err != nil {
		return nil, err
	}
	return probe(ctx, in.src, "source", in.typ, ss.s.p.Name, req)
}

func (ts *targetService) ProbeTransport(ctx context.Context, req *pb.ProbeTransportRequest) (*pb.ProbeTransportResponse, error) {
	in, err := ts.s.lookup(ctx, KindTarget)
	if err != nil {
		return nil, err
	}
	return probe(ctx, in.tgt, "target", in.typ, ts.s.p.Name, req)
}

// probe asks a component that implements TransportProber.
func probe(ctx context.Context, c any, kind, typ, plugin string, req *pb.ProbeTransportRequest) (*pb.ProbeTransportResponse, error) {
	p, ok := c.(TransportProber)
	if !ok {
		return nil, fmt.Errorf("%s %q of plugin %s does not probe its transports: %w", kind, typ, plugin, errdefs.ErrUnimplemented)
	}
	mode, why, err := p.ProbeTransport(ctx, req.GetVm(), int(req.GetDisk()))
	if err != nil {
		return nil, err
	}
	switch mode {
	case "", TransportDirect, TransportHotAdd, TransportNetwork:
	default:
		return nil, fmt.Errorf("%s %q of plugin %s probed an unknown transport %q", kind, typ, plugin, mode)
	}
	return &pb.ProbeTransportResponse{Mode: mode, Why: why}, nil
}

func (ss *sourceService) DescribeVM(ctx context.Context, req *pb.VMRequest) (*pb.VM, error) {
	src, err := ss.src(ctx)
	if err != nil {
		return nil, err
	}
	vm, err := src.DescribeVM(ctx, req.GetVm())
	if err != nil {
		return nil, err
	}
	return vmToProto(vm), nil
}

func (ss *sourceService) CreateSnapshot(ctx context.Context, req *pb.CreateSnapshotRequest) (*pb.Snapshot, error) {
	src, err := ss.src(ctx)
	if err != nil {
		return nil, err
	}
	snap, err := src.CreateSnapshot(ctx, SnapshotRequest{VM: req.GetVm(), Name: req.GetName(), Quiesce: req.GetQuiesce()})
	if err != nil {
		return nil, err
	}
	return snapshotToProto(snap), nil
}

func (ss *sourceService) RemoveSnapshot(ctx context.Context, req *pb.SnapshotRequest) (*pb.Empty, error) {
	src, err := ss.src(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.Empty{}, src.RemoveSnapshot(ctx, req.GetVm(), req.GetSnapshot())
}

func (ss *sourceService) ListSnapshots(ctx context.Context, req *pb.VMRequest) (*pb.ListSnapshotsResponse, error) {
	src, err := ss.src(ctx)
	if err != nil {
		return nil, err
	}
	snaps, err := src.ListSnapshots(ctx, req.GetVm())
	if err != nil {
		return nil, err
	}
	resp := &pb.ListSnapshotsResponse{}
	for i := range snaps {
		resp.Snapshots = append(resp.Snapshots, snapshotToProto(&snaps[i]))
	}
	return resp, nil
}

func (ss *sourceService) ChangedAreas(req *pb.ChangedAreasRequest, stream pb.Source_ChangedAreasServer) error {
	ctx := stream.Context()
	src, err := ss.src(ctx)
	if err != nil {
		return err
	}
	r := ChangedAreasRequest{VM: req.GetVm(), Snapshot: req.GetSnapshot(), Disk: int(req.GetDisk()), ChangeID: req.GetChangeId()}
	return src.ChangedAreas(ctx, r, func(batch []Extent) error {
		for len(batch) > 0 {
			n := min(len(batch), extentsPerBatch)
			if err := stream.Send(&pb.ExtentBatch{Extents: extentsToProto(batch[:n])}); err != nil {
				return err
			}
			batch = batch[n:]
		}
		return nil
	})
}

func (ss *sourceService) OpenSnapshotDisk(ctx context.Context, req *pb.OpenSnapshotDiskRequest) (*pb.DiskHandle, error) {
	in, err := ss.s.lookup(ctx, KindSource)
	if err != nil {
		return nil, err
	}
	r, err := in.src.OpenSnapshotDisk(ctx, req.GetVm(), req.GetSnapshot(), int(req.GetDisk()))
	if err != nil {
		return nil, err
	}
	return ss.s.addDisk(&openDisk{r: r}, ss.s.direct(KindSource, in.typ)), nil
}

// direct reports whether a component type declared the direct lane.
func (s *Server) direct(kind Kind, typ string) bool {
	c, err := s.component(kind, typ)
	return err == nil && c.caps.DirectData
}

type targetService struct {
	pb.UnimplementedTargetServer
	s *Server
}

func (ts *targetService) tgt(ctx context.Context) (Target, error) {
	in, err := ts.s.lookup(ctx, KindTarget)
	if err != nil {
		return nil, err
	}
	return in.tgt, nil
}

func (ts *targetService) GetPlacement(ctx context.Context, _ *pb.Empty) (*pb.Placement, error) {
	t, err := ts.tgt(ctx)
	if err != nil {
		return nil, err
	}
	p, err := t.GetPlacement(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.Placement{Hosts: p.Hosts, Datastores: p.Datastores, Networks: p.Networks, Folders: p.Folders}, nil
}

// replicaCall runs a call that answers with a replica.
func (ts *targetService) replicaCall(ctx context.Context, f func(Target) (*Replica, error)) (*pb.Replica, error) {
	t, err := ts.tgt(ctx)
	if err != nil {
		return nil, err
	}
	r, err := f(t)
	if err != nil {
		return nil, err
	}
	return replicaToProto(r), nil
}

func (ts *targetService) CreateReplica(ctx context.Context, req *pb.CreateReplicaRequest) (*pb.Replica, error) {
	return ts.replicaCall(ctx, func(t Target) (*Replica, error) {
		return t.CreateReplica(ctx, ReplicaRequest{Name: req.GetName(), VM: vmFromProto(req.GetVm()), NetworkMap: netMapFromProto(req.GetNetworkMap()), Owner: ownerFromProto(req.GetOwner())})
	})
}

func (ts *targetService) MapReplica(ctx context.Context, req *pb.CreateReplicaRequest) (*pb.Replica, error) {
	return ts.replicaCall(ctx, func(t Target) (*Replica, error) {
		m, ok := t.(ReplicaMapper)
		if !ok {
			return nil, fmt.Errorf("target of plugin %s cannot map replicas onto existing VMs: %w", ts.s.p.Name, errdefs.ErrUnimplemented)
		}
		return m.MapReplica(ctx, ReplicaRequest{Name: req.GetName(), VM: vmFromProto(req.GetVm()), NetworkMap: netMapFromProto(req.GetNetworkMap()), Owner: ownerFromProto(req.GetOwner())})
	})
}

func (ts *targetService) GetReplica(ctx context.Context, req *pb.ReplicaRequest) (*pb.Replica, error) {
	return ts.replicaCall(ctx, func(t Target) (*Replica, error) { return t.GetReplica(ctx, req.GetReplica()) })
}

func (ts *targetService) ListReplicas(ctx context.Context, _ *pb.Empty) (*pb.ListReplicasResponse, error) {
	t, err := ts.tgt(ctx)
	if err != nil {
		return nil, err
	}
	rs, err := t.ListReplicas(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListReplicasResponse{}
	for i := range rs {
		resp.Replicas = append(resp.Replicas, replicaToProto(&rs[i]))
	}
	return resp, nil
}

func (ts *targetService) DeleteReplica(ctx context.Context, req *pb.ReplicaRequest) (*pb.Empty, error) {
	t, err := ts.tgt(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.Empty{}, t.DeleteReplica(ctx, req.GetReplica())
}

func (ts *targetService) OpenReplicaDisk(ctx context.Context, req *pb.OpenReplicaDiskRequest) (*pb.DiskHandle, error) {
	in, err := ts.s.lookup(ctx, KindTarget)
	if err != nil {
		return nil, err
	}
	w, err := in.tgt.OpenReplicaDisk(ctx, req.GetReplica(), int(req.GetDisk()), req.GetSize())
	if err != nil {
		return nil, err
	}
	direct := ts.s.direct(KindTarget, in.typ)
	if _, prep := w.(WritePreparer); prep && !req.GetPrepares() {
		direct = false // a host that does not prepare must not write the file
	}
	return ts.s.addDisk(&openDisk{w: w}, direct), nil
}

func (ts *targetService) CreateRestorePoint(ctx context.Context, req *pb.CreateRestorePointRequest) (*pb.RestorePoint, error) {
	t, err := ts.tgt(ctx)
	if err != nil {
		return nil, err
	}
	p, err := t.CreateRestorePoint(ctx, req.GetReplica(), req.GetLabels())
	if err != nil {
		return nil, err
	}
	return pointToProto(p), nil
}

func (ts *targetService) ListRestorePoints(ctx context.Context, req *pb.ReplicaRequest) (*pb.ListRestorePointsResponse, error) {
	t, err := ts.tgt(ctx)
	if err != nil {
		return nil, err
	}
	ps, err := t.ListRestorePoints(ctx, req.GetReplica())
	if err != nil {
		return nil, err
	}
	resp := &pb.ListRestorePointsResponse{}
	for i := range ps {
		resp.Points = append(resp.Points, pointToProto(&ps[i]))
	}
	return resp, nil
}

func (ts *targetService) DeleteRestorePoint(ctx context.Context, req *pb.RestorePointRequest) (*pb.Empty, error) {
	t, err := ts.tgt(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.Empty{}, t.DeleteRestorePoint(ctx, req.GetReplica(), req.GetPoint())
}

func (ts *targetService) OpenRestorePointDisk(ctx context.Context, req *pb.OpenRestorePointDiskRequest) (*pb.DiskHandle, error) {
	in, err := ts.s.lookup(ctx, KindTarget)
	if err != nil {
		return nil, err
	}
	r, err := in.tgt.OpenRestorePointDisk(ctx, req.GetReplica(), req.GetPoint(), int(req.GetDisk()))
	if err != nil {
		return nil, err
	}
	return ts.s.addDisk(&openDisk{r: r}, ts.s.direct(KindTarget, in.typ)), nil
}

func (ts *targetService) Failover(ctx context.Context, req *pb.FailoverRequest) (*pb.Replica, error) {
	return ts.replicaCall(ctx, func(t Target) (*Replica, error) {
		return t.Failover(ctx, FailoverRequest{Replica: req.GetReplica(), Point: req.GetPoint(), Network: netConfigFromProto(req.GetNetwork())})
	})
}

func (ts *targetService) UndoFailover(ctx context.Context, req *pb.ReplicaRequest) (*pb.Replica, error) {
	return ts.replicaCall(ctx, func(t Target) (*Replica, error) { return t.UndoFailover(ctx, req.GetReplica()) })
}

func (ts *targetService) CommitFailover(ctx context.Context, req *pb.ReplicaRequest) (*pb.Replica, error) {
	return ts.replicaCall(ctx, func(t Target) (*Replica, error) { return t.CommitFailover(ctx, req.GetReplica()) })
}

func (ts *targetService) ApplyNetwork(ctx context.Context, req *pb.ApplyNetworkRequest) (*pb.Replica, error) {
	return ts.replicaCall(ctx, func(t Target) (*Replica, error) {
		return t.ApplyNetwork(ctx, req.GetReplica(), netConfigFromProto(req.GetNetwork()))
	})
}

type repositoryService struct {
	pb.UnimplementedRepositoryServer
	s *Server
}

func (rs *repositoryService) repo(ctx context.Context) (Repository, error) {
	in, err := rs.s.lookup(ctx, KindRepository)
	if err != nil {
		return nil, err
	}
	return in.repo, nil
}

func (rs *repositoryService) Put(stream pb.Repository_PutServer) error {
	ctx := stream.Context()
	repo, err := rs.repo(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return fmt.Errorf("put: the first message is not a header: %w", errdefs.ErrInvalidArgument)
	}
	if h.GetSize() < 0 || h.GetSize() > 1<<40 {
		return fmt.Errorf("put %q: size %d out of range: %w", h.GetKey(), h.GetSize(), errdefs.ErrInvalidArgument)
	}
	data := make([]byte, 0, h.GetSize())
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		data = append(data, m.GetData()...)
	}
	if int64(len(data)) != h.GetSize() {
		return fmt.Errorf("put %q: received %d bytes of %d: %w", h.GetKey(), len(data), h.GetSize(), errdefs.ErrInvalidArgument)
	}
	gen, err := repo.Put(ctx, h.GetKey(), data, h.GetIfGeneration())
	if err != nil {
		return err
	}
	return stream.SendAndClose(&pb.PutResponse{Generation: gen})
}

func (rs *repositoryService) Get(req *pb.GetRequest, stream pb.Repository_GetServer) error {
	repo, err := rs.repo(stream.Context())
	if err != nil {
		return err
	}
	if loc, ok := repo.(ObjectLocator); ok && req.GetDirect() {
		of, err := loc.LocateObject(stream.Context(), req.GetKey())
		if err != nil {
			return err
		}
		return stream.Send(&pb.GetMessage{Msg: &pb.GetMessage_File{File: &pb.ObjectFile{
			Info: objectToProto(of.Info), Path: of.Path, Offset: of.Offset, Crc32C: of.CRC32C}}})
	}
	data, info, err := repo.Get(stream.Context(), req.GetKey())
	if err != nil {
		return err
	}
	info.Size = int64(len(data))
	if err := stream.Send(&pb.GetMessage{Msg: &pb.GetMessage_Info{Info: objectToProto(info)}}); err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), defaultChunkBytes)
		if err := stream.Send(&pb.GetMessage{Msg: &pb.GetMessage_Data{Data: data[:n]}}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

func (rs *repositoryService) List(ctx context.Context, req *pb.ListRequest) (*pb.ListResponse, error) {
	repo, err := rs.repo(ctx)
	if err != nil {
		return nil, err
	}
	objs, err := repo.List(ctx, req.GetPrefix())
	if err != nil {
		return nil, err
	}
	sort.Slice(objs, func(i, j int) bool { return objs[i].Key < objs[j].Key })
	resp := &pb.ListResponse{}
	for _, o := range objs {
		resp.Objects = append(resp.Objects, objectToProto(o))
	}
	return resp, nil
}

func (rs *repositoryService) Delete(ctx context.Context, req *pb.DeleteRequest) (*pb.Empty, error) {
	repo, err := rs.repo(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.Empty{}, repo.Delete(ctx, req.GetKey(), req.GetIfGeneration())
}

// tests finds the addressed target's test failover, or says it has none.
func (ts *targetService) tests(ctx context.Context) (TestFailoverer, error) {
	in, err := ts.s.lookup(ctx, KindTarget)
	if err != nil {
		return nil, err
	}
	tf, ok := in.tgt.(TestFailoverer)
	if !ok {
		return nil, fmt.Errorf("target %q of plugin %s cannot run test failovers: %w", in.typ, ts.s.p.Name, errdefs.ErrUnimplemented)
	}
	return tf, nil
}

func (ts *targetService) StartTest(ctx context.Context, req *pb.StartTestRequest) (*pb.TestVM, error) {
	tf, err := ts.tests(ctx)
	if err != nil {
		return nil, err
	}
	v, err := tf.StartTest(ctx, TestRequest{ID: req.GetId(), Replica: req.GetReplica(), Point: req.GetPoint(), Network: netConfigFromProto(req.GetNetwork()), Labels: req.GetLabels()})
	if err != nil {
		return nil, err
	}
	return testToProto(v), nil
}

func (ts *targetService) ListTests(ctx context.Context, _ *pb.Empty) (*pb.ListTestsResponse, error) {
	tf, err := ts.tests(ctx)
	if err != nil {
		return nil, err
	}
	vs, err := tf.ListTests(ctx)
	if err != nil {
		return nil, err
	}
	resp := &pb.ListTestsResponse{}
	for i := range vs {
		resp.Tests = append(resp.Tests, testToProto(&vs[i]))
	}
	return resp, nil
}

func (ts *targetService) OpenTestDisk(ctx context.Context, req *pb.OpenTestDiskRequest) (*pb.DiskHandle, error) {
	tf, err := ts.tests(ctx)
	if err != nil {
		return nil, err
	}
	r, err := tf.OpenTestDisk(ctx, req.GetId(), int(req.GetDisk()))
	if err != nil {
		return nil, err
	}
	// A test disk is read through the stream: it is the test's, not a
	// replica disk the direct lane was declared for.
	return ts.s.addDisk(&openDisk{r: r}, false), nil
}

func (ts *targetService) StopTest(ctx context.Context, req *pb.TestRequest) (*pb.Empty, error) {
	tf, err := ts.tests(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.Empty{}, tf.StopTest(ctx, req.GetId())
}

// failbackReader finds the addressed target's failback reader, or says it
// has none.
func (ts *targetService) failbackReader(ctx context.Context, replica string) (FailbackReader, error) {
	in, err := ts.s.lookup(ctx, KindTarget)
	if err != nil {
		return nil, err
	}
	fr, ok := in.tgt.(FailbackReader)
	if !ok {
		return nil, FailbackUnsupported(fmt.Sprintf("target %q", in.typ), ts.s.p.Name, replica)
	}
	return fr, nil
}

func (ts *targetService) FailedOverChanges(req *pb.FailedOverChangesRequest, stream pb.Target_FailedOverChangesServer) error {
	ctx := stream.Context()
	fr, err := ts.failbackReader(ctx, req.GetReplica())
	if err != nil {
		return err
	}
	r := FailedOverChangesRequest{Replica: req.GetReplica(), Disk: int(req.GetDisk()), Since: req.GetSince()}
	mark, err := fr.FailedOverChanges(ctx, r, func(batch []Extent) error {
		for len(batch) > 0 {
			n := min(len(batch), extentsPerBatch)
			if err := stream.Send(&pb.FailedOverChangesMessage{Extents: extentsToProto(batch[:n])}); err != nil {
				return err
			}
			batch = batch[n:]
		}
		return nil
	})
	if err != nil {
		return err
	}
	if mark == "" {
		return fmt.Errorf("changes of replica %q disk %d: the target returned no mark: %w", r.Replica, r.Disk, errdefs.ErrDataLoss)
	}
	return stream.Send(&pb.FailedOverChangesMessage{Mark: mark})
}

func (ts *targetService) OpenFailedOverDisk(ctx context.Context, req *pb.OpenFailedOverDiskRequest) (*pb.DiskHandle, error) {
	fr, err := ts.failbackReader(ctx, req.GetReplica())
	if err != nil {
		return nil, err
	}
	r, err := fr.OpenFailedOverDisk(ctx, req.GetReplica(), int(req.GetDisk()))
	if err != nil {
		return nil, err
	}
	// Read through the stream: a running VM's disk, not a replica disk
	// the direct lane was declared for.
	return ts.s.addDisk(&openDisk{r: r}, false), nil
}

func (ts *targetService) SetReplicaPower(ctx context.Context, req *pb.SetReplicaPowerRequest) (*pb.Replica, error) {
	fr, err := ts.failbackReader(ctx, req.GetReplica())
	if err != nil {
		return nil, err
	}
	r, err := fr.SetReplicaPower(ctx, req.GetReplica(), req.GetOn())
	if err != nil {
		return nil, err
	}
	return replicaToProto(r), nil
}

// failbackWriter finds the addressed source's failback writer, or says it
// has none.
func (ss *sourceService) failbackWriter(ctx context.Context, vm string) (FailbackWriter, error) {
	in, err := ss.s.lookup(ctx, KindSource)
	if err != nil {
		return nil, err
	}
	fw, ok := in.src.(FailbackWriter)
	if !ok {
		return nil, FailbackUnsupported(fmt.Sprintf("source %q", in.typ), ss.s.p.Name, vm)
	}
	return fw, nil
}

func (ss *sourceService) BeginFailback(ctx context.Context, req *pb.BeginFailbackRequest) (*pb.VM, error) {
	fw, err := ss.failbackWriter(ctx, req.GetVm())
	if err != nil {
		return nil, err
	}
	r := FailbackRequest{ID: req.GetId(), VM: req.GetVm()}
	if req.GetCreate() != nil {
		v := vmFromProto(req.GetCreate())
		r.Create = &v
	}
	v, err := fw.BeginFailback(ctx, r)
	if err != nil {
		return nil, err
	}
	return vmToProto(v), nil
}

func (ss *sourceService) OpenFailbackDisk(ctx context.Context, req *pb.OpenFailbackDiskRequest) (*pb.DiskHandle, error) {
	fw, err := ss.failbackWriter(ctx, req.GetVm())
	if err != nil {
		return nil, err
	}
	w, err := fw.OpenFailbackDisk(ctx, req.GetVm(), req.GetId(), int(req.GetDisk()), req.GetSize())
	if err != nil {
		return nil, err
	}
	// Through the stream only: the plugin saves what each write
	// overwrites before it lands.
	return ss.s.addDisk(&openDisk{w: w}, false), nil
}

func (ss *sourceService) StartFailback(ctx context.Context, req *pb.FailbackVMRequest) (*pb.VM, error) {
	fw, err := ss.failbackWriter(ctx, req.GetVm())
	if err != nil {
		return nil, err
	}
	v, err := fw.StartFailback(ctx, req.GetVm(), req.GetId())
	if err != nil {
		return nil, err
	}
	return vmToProto(v), nil
}

func (ss *sourceService) UndoFailback(ctx context.Context, req *pb.FailbackVMRequest) (*pb.Empty, error) {
	fw, err := ss.failbackWriter(ctx, req.GetVm())
	if err != nil {
		return nil, err
	}
	return &pb.Empty{}, fw.UndoFailback(ctx, req.GetVm(), req.GetId())
}

func (ss *sourceService) CommitFailback(ctx context.Context, req *pb.FailbackVMRequest) (*pb.Empty, error) {
	fw, err := ss.failbackWriter(ctx, req.GetVm())
	if err != nil {
		return nil, err
	}
	return &pb.Empty{}, fw.CommitFailback(ctx, req.GetVm(), req.GetId())
}
