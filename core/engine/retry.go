package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// permanent are the error classes that waiting does not cure: a request
// that is wrong as made, an object that is not there (or is there when it
// must not be), a state only an operator changes (a committed replica, a
// replica another job owns, a failover to undo), credentials that are
// refused, a feature a component lacks, damaged data, and a call its
// caller cancelled.
var permanent = []error{
	errdefs.ErrInvalidArgument,
	errdefs.ErrNotFound,
	errdefs.ErrAlreadyExists,
	errdefs.ErrFailedPrecondition,
	errdefs.ErrPermissionDenied,
	errdefs.ErrUnimplemented,
	errdefs.ErrDataLoss,
	errdefs.ErrCanceled,
}

// Retryable reports whether a VM that failed with err may succeed when it
// is tried again later, as a job's retry block asks. It is the rule the
// engine applies between the attempts of a session; a server or a CLI
// deciding about a retry calls it too.
//
// An error of a permanent class (see errdefs) is not retryable: invalid
// argument, not found, already exists, failed precondition, permission
// denied, not implemented, data loss, and cancelled. So is an error that
// joins or wraps one of them with others: one cause that will still be
// there is enough to fail again. Every other error is retryable:
// unavailable, plugin exited, a deadline exceeded, and errors of no class
// at all. Unclassified errors go the retrying way because they are mostly
// what crosses no classifying layer (a broken connection, an I/O error of
// a disk, a plugin that does not classify its errors), and a wrong guess
// costs less that way: a needless retry costs the job's wait, a missed
// one a restore point until the next session.
func Retryable(err error) bool {
	return err != nil && permanentClass(err) == nil
}

// permanentClass returns the permanent class err belongs to, or nil.
func permanentClass(err error) error {
	for _, c := range permanent {
		if errors.Is(err, c) {
			return c
		}
	}
	return nil
}

// vms replicates the session's VMs: a first pass over all of them, then,
// as the job's retry block asks, passes over those whose last attempt
// failed with a Retryable error, each after the job's wait, until each was
// tried Retry.Attempts times. A VM's result in the session is its last
// attempt's, with the number of attempts. VMStarted and VMFinished enclose
// all the attempts at a VM; notices say when a VM is tried again and
// why, or why not.
//
// A retried VM runs as the next session would: its components are
// configured again (see prepare), the failed attempt left every earlier
// restore point as it was, and the new attempt takes a new snapshot
// (removing the one the failed attempt may have left) and copies what
// changed since the newest restore point.
//
// When ctx ends, during an attempt or the wait, the session ends at once
// as interrupted sessions do: the VMs not tried again keep the result of
// their last attempt.
func (r *run) vms(ctx context.Context, vms []string) error {
	job := r.job
	attempts := max(job.Retry.Attempts, 1)
	// last holds the error of the last attempt at each VM to be tried
	// again: VMs whose events are not finished yet.
	last := map[string]error{}
	pending := vms
	for attempt := 1; len(pending) > 0; attempt++ {
		// Why the components could not be configured for this pass.
		var unready error
		if attempt > 1 {
			if err := r.pause(ctx, pending, attempt, attempts); err != nil {
				r.abandon(pending, last)
				return fmt.Errorf("job %q: %w", job.Name, err)
			}
			unready = r.prepare(ctx)
		}
		var again []string
		for i, name := range pending {
			if err := ctx.Err(); err != nil {
				r.abandon(pending[i:], last)
				return fmt.Errorf("job %q: %w", job.Name, err)
			}
			if attempt > 1 {
				r.attemptNotice(name, attempt, "attempt %d of %d", attempt, attempts)
			}
			var res catalog.VMResult
			var err error
			if unready != nil {
				err = fmt.Errorf("job %q vm %q: not tried: %w", job.Name, name, unready)
				res = catalog.VMResult{VM: name, Result: catalog.ResultFailed, Error: err.Error(), Attempts: attempt}
			} else {
				res, err = r.vm(ctx, name, attempt)
			}
			retry := r.retry(ctx, name, err, attempt, attempts)
			if retry {
				again = append(again, name)
				last[name] = err
			} else {
				delete(last, name)
				r.finish(res, err)
			}
			r.record(res)
			if err := r.e.Catalog.SaveSessionVM(r.sess.ID, res); err != nil {
				r.abandon(again, last)
				r.abandon(pending[i+1:], last)
				return fmt.Errorf("job %q vm %q: record the result: %w", job.Name, name, err)
			}
		}
		pending = again
	}
	return nil
}

// prepare readies a retry pass as the start of a session readies the
// first: the proxies are greeted again, so that one that came back is
// used, and the components are configured again, as the next session
// would configure them: the plugin host starts a plugin that died again
// when it configures one of its components, and the control calls of a
// job on proxies move off a proxy that went away.
func (r *run) prepare(ctx context.Context) error {
	if r.e.Proxies != nil {
		r.greetProxies(ctx, false)
	}
	if err := r.components(ctx); err != nil {
		r.sessionNotice(fmt.Sprintf("the VMs to try again cannot be tried: %v", err))
		return err
	}
	return nil
}

// retry decides whether the VM whose attempt ended with err is tried
// again in this session, and says why it is or is not.
func (r *run) retry(ctx context.Context, name string, err error, attempt, attempts int) bool {
	if err == nil || ctx.Err() != nil || attempts == 1 {
		return false
	}
	if c := permanentClass(err); c != nil {
		r.attemptNotice(name, attempt, "not tried again: the error (%v) does not go away by waiting", c)
		return false
	}
	if attempt >= attempts {
		r.attemptNotice(name, attempt, "failed at each of its %d attempts", attempts)
		return false
	}
	when := "after the other VMs"
	if wait := r.job.Retry.Wait; wait > 0 {
		when += " and a wait of " + wait.String()
	}
	r.attemptNotice(name, attempt, "attempt %d of %d failed; tried again %s: %v", attempt, attempts, when, err)
	return true
}

// pause waits the job's retry wait before the given attempt at the VMs
// pending; it returns ctx's error as soon as ctx ends.
func (r *run) pause(ctx context.Context, pending []string, attempt, attempts int) error {
	wait := r.job.Retry.Wait
	vms := strings.Join(pending, ", ")
	if wait <= 0 {
		r.sessionNotice(fmt.Sprintf("trying %s again now: attempt %d of %d", vms, attempt, attempts))
		return ctx.Err()
	}
	r.sessionNotice(fmt.Sprintf("trying %s again in %s (at %s): attempt %d of %d", vms, wait, r.e.now().Add(wait).Format(time.TimeOnly), attempt, attempts))
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// abandon finishes the events of the VMs among names that were to be
// tried again, when the session ends before it tries them: each ends with
// its last attempt's result, as the session records it.
func (r *run) abandon(names []string, last map[string]error) {
	for _, name := range names {
		err, open := last[name]
		if !open {
			continue
		}
		delete(last, name)
		for _, res := range r.sess.VMs {
			if res.VM == name {
				r.finish(res, err)
			}
		}
	}
}

// finish ends a VM's events with its result.
func (r *run) finish(res catalog.VMResult, err error) {
	r.e.emit(Event{Kind: VMFinished, Session: r.sess.ID, Job: r.job.Name, VM: res.VM, Err: err, Result: res.Result, Message: res.Error, Attempt: res.Attempts})
}

// record puts a VM's result in the session, in place of its earlier
// attempt's.
func (r *run) record(res catalog.VMResult) {
	for i := range r.sess.VMs {
		if r.sess.VMs[i].VM == res.VM {
			r.sess.VMs[i] = res
			return
		}
	}
	r.sess.VMs = append(r.sess.VMs, res)
}

// attemptNotice tells the operator about an attempt at a VM.
func (r *run) attemptNotice(vm string, attempt int, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.e.log().Info(msg, "job", r.job.Name, "vm", vm, "attempt", attempt)
	r.e.emit(Event{Kind: Notice, Session: r.sess.ID, Job: r.job.Name, VM: vm, Message: msg, Attempt: attempt})
}
