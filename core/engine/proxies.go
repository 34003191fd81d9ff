package engine

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/datamover"
	"github.com/ferry-dr/ferry/core/proxy"
	"github.com/ferry-dr/ferry/core/replicameta"
	"github.com/ferry-dr/ferry/sdk"
)

// proxyNames are the proxies a job may use; nil when any may be used.
func proxyNames(job *config.Job) []string {
	var names []string
	for _, p := range job.Proxies {
		names = append(names, p.Name)
	}
	return names
}

// greetProxies reaches the job's proxies at the start of a session; one
// that cannot be reached is skipped with a warning (the others do the
// work; a disk no proxy can take fails its VM).
func (r *run) greetProxies(ctx context.Context) {
	bad := r.e.Proxies.Greet(ctx, proxyNames(r.job))
	names := make([]string, 0, len(bad))
	for n := range bad {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		msg := fmt.Sprintf("proxy %s is skipped: %v", n, bad[n])
		r.sess.Warnings = append(r.sess.Warnings, msg)
		r.e.log().Warn(msg, "job", r.job.Name)
		r.e.emit(Event{Kind: Notice, Session: r.sess.ID, Job: r.job.Name, Message: msg})
	}
}

// wireBlock is the wire form of a plugin block.
func wireBlock(b *config.PluginBlock) proxy.Block { return proxy.Block{Type: b.Type, Config: b.Config} }

// remoteDisk moves one disk on proxies: the source proxy reads the
// snapshot disk and keeps the digests, the target proxy writes the
// replica disk.
func (r *run) remoteDisk(ctx context.Context, name string, snap *sdk.Snapshot, d sdk.SnapshotDisk, replica *sdk.Replica, fresh bool, bind replicameta.Binding, req datamover.Request, bs int, total int64, res *catalog.DiskResult) error {
	if r.job.Repository == nil {
		return errors.New("the job runs on proxies but names no repository: the default one is a folder on the control plane's host, which the proxies cannot reach; add repository = repository.TYPE.NAME to the job")
	}
	var halfway sync.Once
	t := proxy.Task{
		Job: r.job.Name, VM: name, Disk: d.Index, Proxies: proxyNames(r.job),
		SourceSite: r.job.Source.Site, TargetSite: r.job.Target.Site,
		Source: wireBlock(r.job.Source), Target: wireBlock(r.job.Target), Repository: wireBlock(r.job.Repository),
		Snapshot: snap.ID, Capacity: d.Capacity, Replica: replica.ID,
		Changed: req.Changed, Allocated: req.Allocated, TargetZero: req.TargetZero, Fresh: fresh,
		BlockSize: bs, Compression: string(r.job.Transfer.Compression), Throttle: r.job.Transfer.Throttle,
		MetaPrefix: replicameta.Prefix(r.job.Name, name, d.Index), Session: r.sess.ID, Binding: bind,
		Ready: func(rd proxy.Ready) {
			res.Lane, res.Transport, res.TransportWhy = catalog.Lane(rd.Lane), rd.Transport, rd.TransportWhy
			res.SourceProxy, res.TargetProxy = rd.SourceProxy, rd.TargetProxy
			r.notice(name, "disk %d: read by proxy %s (%s), written by proxy %s (%s); %s, compression %s", d.Index, rd.SourceProxy, rd.SourceWhy, rd.TargetProxy, rd.TargetWhy, rd.Link, rd.Codec)
			if len(rd.Rules) > 0 {
				r.notice(name, "disk %d: traffic rules %s cover the link from proxy %s to proxy %s", d.Index, strings.Join(rd.Rules, ", "), rd.SourceProxy, rd.TargetProxy)
			}
			if rd.Transport != "" {
				r.notice(name, "disk %d: read with %s: %s", d.Index, rd.Transport, rd.TransportWhy)
			}
			if rd.Distrusted != "" {
				if fresh {
					r.notice(name, "disk %d: the repository's metadata is not this new replica's (%s); it is set aside", d.Index, rd.Distrusted)
				} else {
					r.notice(name, "disk %d: the repository's metadata is not trusted (%s); digests are recomputed from the replica where blocks are compared", d.Index, rd.Distrusted)
				}
			}
		},
		Moved: func(err error, down map[string]error) {
			names := make([]string, 0, len(down))
			for n := range down {
				names = append(names, n)
			}
			sort.Strings(names)
			var why []string
			for _, n := range names {
				why = append(why, fmt.Sprintf("proxy %s: %v", n, down[n]))
			}
			msg := fmt.Sprintf("disk %d: %v; placing it again", d.Index, err)
			if len(why) > 0 {
				msg += " (unreachable now: " + strings.Join(why, "; ") + ")"
			}
			r.notice(name, "%s", msg)
		},
		Progress: func(done int64) {
			if done*2 >= total {
				halfway.Do(func() { r.e.hook(StepMoving, name) })
			}
			r.e.emit(Event{Kind: DiskProgress, Session: r.sess.ID, Job: r.job.Name, VM: name, Disk: d.Index, Mode: res.Mode, Lane: res.Lane, Done: done, Total: total})
		},
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
		r.notice(name, "disk %d: recomputed the digests of %d segments (%d bytes) from the replica", d.Index, out.SegmentsRecomputed, out.BytesRecomputed)
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
