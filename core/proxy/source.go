package proxy

import (
	"context"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/status"

	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/core/pki"
	proxyv1 "github.com/ferry-dr/ferry/core/proxy/proto/ferry/proxy/v1"
	"github.com/ferry-dr/ferry/core/replicameta"
	"github.com/ferry-dr/ferry/sdk"
)

// dial opens a connection to a proxy (or from the control plane to one)
// whose certificate must name want.
func dial(addr string, creds *pki.Credentials, want pki.Identity, dialer func(ctx context.Context, addr string) (net.Conn, error)) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(batchedTLS{credentials.NewTLS(creds.ClientConfig(want))}), grpc.WithWriteBufferSize(writeBuffer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMessage), grpc.MaxCallSendMsgSize(maxMessage), grpc.ForceCodecV2(sdk.MessageCodec())),
		experimental.WithBufferPool(sdk.MessageBuffers()),
		grpc.WithInitialWindowSize(streamWindow), grpc.WithInitialConnWindowSize(connWindow),
	}
	if dialer != nil {
		opts = append(opts, grpc.WithContextDialer(dialer))
	}
	return grpc.NewClient(addr, opts...)
}

func extentsFrom(es []*proxyv1.Extent) []sdk.Extent {
	out := make([]sdk.Extent, len(es))
	for i, e := range es {
		out[i] = sdk.Extent{Offset: e.GetOffset(), Length: e.GetLength()}
	}
	return out
}

func (s *service) Source(req *proxyv1.SourceTask, stream proxyv1.Proxy_SourceServer) error {
	ctx := stream.Context()
	if err := s.begin(ctx); err != nil {
		return err
	}
	a := s.a
	defer a.release()
	log := a.log().With("task", req.GetTask(), "vm", req.GetVm(), "disk", req.GetDisk(), "target_proxy", req.GetTargetName())
	log.Info("source half: started")
	done, err := a.source(ctx, req, stream.Send)
	if err != nil {
		log.Warn("source half: failed", "error", err)
		a.forget(sdk.KindSource, req.GetSource())
		a.forget(sdk.KindRepository, req.GetRepository())
		// Unavailable says a proxy could not be reached (this task may
		// move to another); anything else is the task's own failure.
		code := status.Code(err)
		if code == codes.Unknown {
			code = codes.Internal
		}
		return status.Error(code, err.Error())
	}
	log.Info("source half: done", "read", done.BytesRead, "sent", done.BytesSent)
	return stream.Send(&proxyv1.TaskEvent{Event: &proxyv1.TaskEvent_Done{Done: done}})
}

// source runs the source half of a task: it reads the snapshot disk,
// compares it with the digests in the repository and streams what
// differs to the target half.
func (a *Agent) source(ctx context.Context, req *proxyv1.SourceTask, send func(*proxyv1.TaskEvent) error) (*proxyv1.Done, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, err := a.component(ctx, sdk.KindSource, req.GetSource())
	if err != nil {
		return nil, err
	}
	src := c.(sdk.Source)
	c, err = a.component(ctx, sdk.KindRepository, req.GetRepository())
	if err != nil {
		return nil, err
	}
	repo := c.(sdk.Repository)
	disk := int(req.GetDisk())

	conn, err := a.peer(req.GetTargetAddress(), req.GetTargetName())
	if err != nil {
		return nil, fmt.Errorf("target proxy %s at %s: %w", req.GetTargetName(), req.GetTargetAddress(), err)
	}
	out, err := openSender(ctx, conn, req.GetTask(), a.resumeFor())
	if err != nil {
		return nil, fmt.Errorf("data stream to target proxy %s at %s: %w", req.GetTargetName(), req.GetTargetAddress(), explained(err))
	}
	closed := false
	defer func() {
		if !closed {
			out.Abort()
		}
	}()

	rd, err := src.OpenSnapshotDisk(ctx, req.GetVm(), req.GetSnapshot(), disk)
	if err != nil {
		return nil, fmt.Errorf("open the snapshot disk on proxy %s: %w", a.Name, err)
	}
	rdClosed := false
	defer func() {
		if !rdClosed {
			rd.Close()
		}
	}()
	ready := &proxyv1.Ready{Lane: "stream"}
	if _, ok := rd.(sdk.LocalPather); ok {
		ready.Lane = "direct"
	}
	if tr, ok := rd.(sdk.TransportReporter); ok {
		ready.Transport, ready.TransportWhy = tr.Transport()
	}

	b := req.GetBinding()
	store, err := replicameta.Open(ctx, repo, req.GetMetaPrefix(), replicameta.Options{
		Session: req.GetSession(), Size: req.GetCapacity(), BlockSize: int(req.GetBlockSize()),
		SegmentBlocks: datamover.DefaultSegmentBlocks, Fresh: req.GetFresh(),
		Binding:          replicameta.Binding{Replica: b.GetReplica(), Incarnation: b.GetIncarnation(), Point: b.GetPoint(), PointSession: b.GetPointSession(), Capacity: b.GetCapacity()},
		RecomputeDigests: out.Digests,
	})
	if err != nil {
		return nil, fmt.Errorf("replica metadata: %w", err)
	}
	defer store.Close()
	ready.Distrusted = store.Distrusted()
	if err := send(&proxyv1.TaskEvent{Event: &proxyv1.TaskEvent_Ready{Ready: ready}}); err != nil {
		return nil, err
	}

	mreq := datamover.Request{
		Source: rd, Size: req.GetCapacity(), TargetZero: req.GetTargetZero(), Digests: store,
		Sink: datamover.Throttle(out, a.ruleLimiters(req.GetRules())...),
		Sync: out.Sync, SyncLast: out.SyncClose,
	}
	if req.GetHasChanged() {
		mreq.Changed = extentsFrom(req.GetChanged())
	}
	if req.GetHasAllocated() {
		mreq.Allocated = extentsFrom(req.GetAllocated())
	}
	// Progress goes out at most every progressEvery, from one goroutine.
	var progress atomic.Int64
	mreq.Progress = func(done int64) { progress.Store(done) }
	stop := make(chan struct{})
	reported := make(chan struct{})
	go func() {
		defer close(reported)
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		last := int64(-1)
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if p := progress.Load(); p != last {
					last = p
					if send(&proxyv1.TaskEvent{Event: &proxyv1.TaskEvent_Progress{Progress: &proxyv1.Progress{Done: p}}}) != nil {
						cancel()
						return
					}
				}
			}
		}
	}()
	st, err := datamover.Move(ctx, mreq, datamover.Options{BlockSize: int(req.GetBlockSize()), Codec: datamover.Codec(req.GetCodec())})
	close(stop)
	<-reported
	done := &proxyv1.Done{BytesRead: st.BytesRead, BytesSent: out.sent.Load(), BytesChanged: st.BytesChanged, BlocksChanged: st.BlocksChanged, BlocksTotal: st.BlocksTotal}
	if err != nil {
		return nil, fmt.Errorf("move: %w", err)
	}
	rdClosed = true
	if err := rd.Close(); err != nil {
		return nil, fmt.Errorf("the snapshot disk: %w", err)
	}
	closed = true
	closedReply, err := out.Close(ctx)
	if err != nil {
		return nil, err
	}
	done.BytesWritten, done.WriteBusyNs = closedReply.GetBytesWritten(), closedReply.GetWriteBusyNs()
	done.ElapsedNs, done.ReadBusyNs, done.CpuBusyNs, done.SendBusyNs = int64(st.Elapsed), int64(st.ReadBusy), int64(st.CPUBusy), int64(st.SendBusy)
	if err := store.Finish(ctx, req.GetCapacity()); err != nil {
		return nil, fmt.Errorf("replica metadata: %w", err)
	}
	done.Reconnects = int32(out.Reconnects())
	ms := store.Stats()
	done.SegmentsRecomputed, done.BytesRecomputed = int64(ms.SegmentsRecomputed), ms.BytesRecomputed
	return done, nil
}

// explained drops gRPC's wrapping of an error that crossed a call (the
// message is what the other side said) and adds what pki can say about a
// connection error.
func explained(err error) error {
	if s, ok := status.FromError(err); ok && s.Code() != codes.OK {
		err = &remoteError{code: s.Code(), msg: s.Message()}
	}
	if why := pki.Explain(err); why != "" {
		return fmt.Errorf("%w (%s)", err, why)
	}
	return err
}

// remoteError is an error another process returned over gRPC; it keeps
// the status code (GRPCStatus), so its class survives one more hop.
type remoteError struct {
	code codes.Code
	msg  string
}

func (e *remoteError) Error() string { return e.msg }

func (e *remoteError) GRPCStatus() *status.Status { return status.New(e.code, e.msg) }
