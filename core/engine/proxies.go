package engine

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/core/replicameta"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// proxyNames are the proxies a job may use; nil when any may be used.
func proxyNames(job *config.Job) []string {
	var names []string
	for _, p := range job.Proxies {
		names = append(names, p.Name)
	}
	return names
}

// greetProxies reaches the job's proxies at the start of a session, and
// again before each retry pass; one that cannot be reached is skipped with
// a warning (the others do the work; a disk no proxy can take fails its
// VM). The session records the warnings of its start: a retry pass only
// says which proxies it skips, as its failures show what that did.
//
// At the start, a proxy that answered a hello within helloFresh is not
// asked again: `ferry run` greets the proxies as it starts, while the
// plugins check the configuration, and a second hello would cost a round
// trip of the link between the sites for nothing new.
func (r *run) greetProxies(ctx context.Context, record bool) {
	fresh := helloFresh
	if !record {
		fresh = 0
	}
	bad := r.e.Proxies.GreetSince(ctx, proxyNames(r.job), fresh)
	for _, n := range slices.Sorted(maps.Keys(bad)) {
		msg := fmt.Sprintf("proxy %s is skipped: %v", n, bad[n])
		if record {
			r.sess.Warnings = append(r.sess.Warnings, msg)
		}
		r.e.log().Warn(msg, "job", r.job.Name)
		r.e.emit(Event{Kind: Notice, Session: r.sess.ID, Job: r.job.Name, Message: msg})
	}
}

// helloFresh is how old the answer to a hello may be for a session's
// start to take it: long enough for the greetings `ferry run` begins as
// it starts, short enough that a proxy gone since is found at the start.
const helloFresh = 2 * time.Second

// ProxyTask is what a job's disk task on proxies carries whatever the
// disk: the job, the VM, the proxies it may use, the sites, the source and
// target blocks and the compression. It is what placement needs: `ferry
// plan` shows where a task made of it would go, and a run fills in the
// disk.
func ProxyTask(job *config.Job, vm string) proxy.Task {
	return proxy.Task{
		Job: job.Name, VM: vm, Proxies: proxyNames(job),
		SourceSite: job.Source.Site, TargetSite: job.Target.Site,
		Source: wireBlock(job.Source), Target: wireBlock(job.Target),
		Compression: string(job.Transfer.Compression),
	}
}

// wireBlock is the wire form of a plugin block.
func wireBlock(b *config.PluginBlock) proxy.Block { return proxy.Block{Type: b.Type, Config: b.Config} }

// remoteDisk moves one disk on proxies: the source proxy reads the
// snapshot disk and keeps the digests, the target proxy writes the
// replica disk.
func (r *run) remoteDisk(ctx context.Context, name string, snap *sdk.Snapshot, d sdk.SnapshotDisk, replica *sdk.Replica, fresh bool, bind replicameta.Binding, req datamover.Request, bs int, total int64, res *catalog.DiskResult) error {
	if r.job.Repository == nil {
		return fmt.Errorf("the job runs on proxies but names no repository: the default one is a folder on the control plane's host, which the proxies cannot reach; add repository = repository.TYPE.NAME to the job: %w", errdefs.ErrInvalidArgument)
	}
	var halfway sync.Once
	t := ProxyTask(r.job, name)
	t.Disk, t.Repository = d.Index, wireBlock(r.job.Repository)
	t.Snapshot, t.Capacity, t.Replica = snap.ID, d.Capacity, replica.ID
	t.Changed, t.Allocated, t.TargetZero, t.Fresh = req.Changed, req.Allocated, req.TargetZero, fresh
	t.BlockSize, t.Throttle = bs, r.job.Transfer.Throttle
	t.MetaPrefix, t.Session, t.Binding = replicameta.Prefix(r.job.Name, name, d.Index), r.sess.ID, bind
	t.Ready = func(rd proxy.Ready) {
		res.Lane, res.Transport, res.TransportWhy = catalog.Lane(rd.Lane), rd.Transport, rd.TransportWhy
		res.SourceProxy, res.TargetProxy = rd.SourceProxy, rd.TargetProxy
		r.notice(name, "disk %d: read by proxy %s (%s), written by proxy %s (%s); %s, compression %s", d.Index, rd.SourceProxy, rd.SourceWhy, rd.TargetProxy, rd.TargetWhy, rd.Link, rd.Codec)
		if len(rd.Rules) > 0 {
			r.notice(name, "disk %d: traffic rules %s cover the link from proxy %s to proxy %s", d.Index, strings.Join(rd.Rules, ", "), rd.SourceProxy, rd.TargetProxy)
		}
		r.transport(name, d.Index, rd.Transport, rd.TransportWhy)
		if rd.Distrusted != "" {
			r.distrusted(name, d.Index, fresh, rd.Distrusted)
		}
	}
	t.Moved = func(err error, down map[string]error) {
		var why []string
		for _, n := range slices.Sorted(maps.Keys(down)) {
			why = append(why, fmt.Sprintf("proxy %s: %v", n, down[n]))
		}
		msg := fmt.Sprintf("disk %d: %v; placing it again", d.Index, err)
		if len(why) > 0 {
			msg += " (unreachable now: " + strings.Join(why, "; ") + ")"
		}
		r.notice(name, "%s", msg)
	}
	t.Progress = func(done int64) {
		if done*2 >= total {
			halfway.Do(func() { r.e.hook(StepMoving, name) })
		}
		r.e.emit(Event{Kind: DiskProgress, Session: r.sess.ID, Job: r.job.Name, VM: name, Disk: d.Index, Mode: res.Mode, Lane: res.Lane, Done: done, Total: total})
	}
	out, err := r.e.Proxies.Run(ctx, t)
	res.SourceProxy, res.TargetProxy = out.SourceProxy, out.TargetProxy
	st := out.Stats
	res.BytesRead, res.BytesSent, res.BlocksChanged, res.BlocksTotal = st.BytesRead, st.BytesSent, st.BlocksChanged, st.BlocksTotal
	res.BytesWritten = out.BytesWritten
	if err != nil {
		return fmt.Errorf("on proxies: %w", err)
	}
	res.Busy = stagesOf(st, st.SendBusy, out.WriteBusy)
	if out.Reconnects > 0 {
		r.notice(name, "disk %d: the data stream from proxy %s to proxy %s broke and was resumed (%d times)", d.Index, out.SourceProxy, out.TargetProxy, out.Reconnects)
	}
	if out.SegmentsRecomputed > 0 {
		r.recomputed(name, d.Index, out.SegmentsRecomputed, out.BytesRecomputed)
	}
	return nil
}

// siteName names where a block's storage is, for messages.
func siteName(b *config.PluginBlock) string {
	if b.Site == "" {
		return b.Address()
	}
	return "site " + b.Site + " (" + b.Address() + ")"
}

// stagesOf turns what moving a disk took into bottleneck statistics.
func stagesOf(st datamover.Stats, network, write time.Duration) *catalog.Busy {
	if st.Elapsed <= 0 || st.BytesRead == 0 && st.BytesSent == 0 {
		return nil // nothing moved: no stage to speak of
	}
	stages := datamover.Stages{
		Source:  datamover.Percent(st.ReadBusy, st.Elapsed),
		Proxy:   datamover.Percent(st.CPUBusy, st.Elapsed),
		Network: datamover.Percent(network, st.Elapsed),
		Target:  datamover.Percent(write, st.Elapsed),
	}
	return &catalog.Busy{Source: stages.Source, Proxy: stages.Proxy, Network: stages.Network, Target: stages.Target, Bottleneck: stages.Bottleneck()}
}

// distrusted says that the repository's metadata of a disk is not
// trusted, and what comes of it.
func (r *run) distrusted(vm string, disk int, fresh bool, why string) {
	if fresh {
		r.notice(vm, "disk %d: the repository's metadata is not this new replica's (%s); it is set aside", disk, why)
		return
	}
	r.notice(vm, "disk %d: the repository's metadata is not trusted (%s); digests are recomputed from the replica where blocks are compared", disk, why)
}

// recomputed says how much of a disk's digests were rebuilt from the
// replica.
func (r *run) recomputed(vm string, disk, segments int, bytes int64) {
	r.notice(vm, "disk %d: recomputed the digests of %d segments (%d bytes) from the replica", disk, segments, bytes)
}

// transport says how the source read a disk, when it says.
func (r *run) transport(vm string, disk int, mode, why string) {
	if mode != "" {
		r.notice(vm, "disk %d: read with %s: %s", disk, mode, why)
	}
}
