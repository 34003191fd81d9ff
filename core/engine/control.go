package engine

import (
	"context"
	"fmt"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/sdk"
)

// Where a job's control calls run. Without proxies, ferry's own plugin
// instances make them. A job on proxies makes them on a proxy too: the
// proxies are where its plugins reach the storage (a datastore mounted
// there, the VM a HotAdd proxy runs in, the Hyper-V host itself), and the
// control plane may reach neither site's storage. Each of the source and
// the target is attached on a proxy of its site first, then on another
// proxy the job may use; the repository is used by the source proxies
// alone.

// Source returns the job's source as a session of the job reaches it, its
// capabilities, and the proxy that makes its calls ("": this process).
// With proxies, the proxies the job may use are greeted first.
func (e *Engine) Source(ctx context.Context, job *config.Job) (sdk.Source, sdk.Capabilities, string, error) {
	if e.Proxies != nil {
		e.Proxies.Greet(ctx, proxyNames(job))
	}
	return e.source(ctx, job, nil)
}

// Target returns the job's target as Source returns its source.
func (e *Engine) Target(ctx context.Context, job *config.Job) (sdk.Target, string, error) {
	if e.Proxies != nil {
		e.Proxies.Greet(ctx, proxyNames(job))
	}
	tgt, _, where, err := e.target(ctx, job, nil)
	return tgt, where, err
}

func (e *Engine) source(ctx context.Context, job *config.Job, moved func(string)) (sdk.Source, sdk.Capabilities, string, error) {
	if e.Proxies == nil {
		src, caps, err := e.Components.Source(ctx, job.Source)
		return src, caps, "", err
	}
	c, caps, where, err := e.Proxies.Control(ctx, proxyNames(job), job.Source.Site, sdk.KindSource, wireBlock(job.Source), moved)
	if err != nil {
		return nil, caps, "", err
	}
	return c.(sdk.Source), caps, where, nil
}

func (e *Engine) target(ctx context.Context, job *config.Job, moved func(string)) (sdk.Target, sdk.Capabilities, string, error) {
	if e.Proxies == nil {
		tgt, caps, err := e.Components.Target(ctx, job.Target)
		return tgt, caps, "", err
	}
	c, caps, where, err := e.Proxies.Control(ctx, proxyNames(job), job.Target.Site, sdk.KindTarget, wireBlock(job.Target), moved)
	if err != nil {
		return nil, caps, "", err
	}
	return c.(sdk.Target), caps, where, nil
}

// components configures what a session of the job calls: its source and
// target, and its repository when its disks move in this process. A retry
// pass calls it again (see run.prepare): the VMs picked by selectors are
// still addressed by id.
func (r *run) components(ctx context.Context) error {
	srcErr, tgtErr, repoErr := r.configure(ctx)
	job := r.job
	switch {
	case srcErr != nil:
		return fmt.Errorf("source %s: %w", job.Source.Address(), srcErr)
	case tgtErr != nil:
		return fmt.Errorf("target %s: %w", job.Target.Address(), tgtErr)
	}
	return repoErr
}

// configure configures the components and says why each that could not
// be configured could not (the repository's error names it); a component
// after one that failed is not configured.
func (r *run) configure(ctx context.Context) (srcErr, tgtErr, repoErr error) {
	job := r.job
	var where string
	if r.src, r.srcCaps, where, srcErr = r.e.source(ctx, job, r.sessionNotice); srcErr != nil {
		return srcErr, nil, nil
	}
	if len(r.ids) > 0 {
		r.src = keyedSource{Source: r.src, ids: r.ids}
	}
	if where != "" {
		r.sessionNotice(fmt.Sprintf("the source's calls run on proxy %s", where))
	}
	if r.tgt, _, where, tgtErr = r.e.target(ctx, job, r.sessionNotice); tgtErr != nil {
		return nil, tgtErr, nil
	}
	if where != "" {
		r.sessionNotice(fmt.Sprintf("the target's calls run on proxy %s", where))
	}
	if r.e.Proxies != nil {
		return nil, nil, nil
	}
	var err error
	if r.repo, err = r.e.Components.Repository(ctx, job.Repository); err != nil {
		name := "the default repository"
		if job.Repository != nil {
			name = job.Repository.Address()
		}
		return nil, nil, fmt.Errorf("repository %s: %w", name, err)
	}
	return nil, nil, nil
}

// sessionNotice tells the operator something about the whole session.
func (r *run) sessionNotice(msg string) {
	r.e.log().Info(msg, "job", r.job.Name)
	r.e.emit(Event{Kind: Notice, Session: r.sess.ID, Job: r.job.Name, Message: msg})
}
