package vsphere

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vmware/govmomi/vapi/rest"
	"github.com/vmware/govmomi/vapi/tags"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Tags live in vCenter's Automation API (REST, /rest/com/vmware/cis/...),
// not in the SOAP API the rest of the plugin speaks. tagging holds a REST
// session beside the SOAP one: the same endpoint, credentials and TLS
// settings, logged in on first use and again when vCenter drops it, logged
// out at Stop. An ESXi host has no Automation API: its VMs have no tags.
//
// A listing asks which tags every VM carries in one bulk call
// (list-attached-tags-on-objects), then resolves tag and category ids to
// names, one call per id it has not seen within nameTTL.
type tagging struct {
	c *conn

	mu    sync.Mutex
	rc    *rest.Client // nil until logged in
	names map[string]cachedName

	calls atomic.Int64 // calls of the API made, for tests that count them
}

// cachedName is a tag's "Category/Name", or a category's name, by id.
type cachedName struct {
	name string
	at   time.Time
}

// nameTTL bounds how long a renamed tag or category keeps its old name.
const nameTTL = 5 * time.Minute

// hasTags reports whether the endpoint can have tags: vCenter can, an
// ESXi host cannot.
func (c *conn) hasTags() bool {
	return c.client.ServiceContent.About.ApiType == "VirtualCenter"
}

// noTagsError is the answer of an endpoint without tags.
func (c *conn) noTagsError() error {
	return fmt.Errorf("vsphere %s is an ESXi host (%s): tags live in vCenter's Automation API, which a host does not serve; select its VMs by name or folder, or connect to the vCenter that manages it: %w",
		c.url, c.client.ServiceContent.About.FullName, errdefs.ErrUnimplemented)
}

// session returns the REST client, logging in when there is none.
func (t *tagging) session(ctx context.Context, renew bool) (*rest.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rc != nil && !renew {
		return t.rc, nil
	}
	rc := rest.NewClient(&vim25.Client{Client: t.c.soap})
	if err := rc.Login(ctx, url.UserPassword(t.c.cfg.Username, t.c.cfg.Password)); err != nil {
		if rest.IsStatusError(err, http.StatusNotFound) {
			return nil, fmt.Errorf("vsphere %s: the endpoint does not serve the vSphere Automation API, where tags live (%v): %w", t.c.url, err, errdefs.ErrUnimplemented)
		}
		return nil, t.classify(err, "log in to the Automation API as "+t.c.cfg.Username)
	}
	t.rc = rc
	return rc, nil
}

// do runs fn against the tagging API, logging in again once when the
// session is gone.
func (t *tagging) do(ctx context.Context, op string, fn func(m *tags.Manager) error) error {
	if !t.c.hasTags() {
		return t.c.noTagsError()
	}
	rc, err := t.session(ctx, false)
	if err != nil {
		return err
	}
	t.calls.Add(1)
	err = fn(tags.NewManager(rc))
	if rest.IsStatusError(err, http.StatusUnauthorized) {
		t.c.log.Debug("Automation API session expired; logging in again", "url", t.c.url.String())
		if rc, err = t.session(ctx, true); err != nil {
			return err
		}
		t.calls.Add(1)
		err = fn(tags.NewManager(rc))
	}
	return t.classify(err, op)
}

// classify gives an error of the tagging API a class, naming the endpoint.
func (t *tagging) classify(err error, op string) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("vsphere %s: %s: %w", t.c.url, op, err)
	case rest.IsStatusError(err, http.StatusUnauthorized), rest.IsStatusError(err, http.StatusForbidden):
		return fmt.Errorf("vsphere %s: %s: %v: %w", t.c.url, op, err, errdefs.ErrPermissionDenied)
	case rest.IsStatusError(err, http.StatusNotFound):
		return fmt.Errorf("vsphere %s: %s: %v: %w", t.c.url, op, err, errdefs.ErrNotFound)
	case rest.IsStatusError(err, http.StatusServiceUnavailable):
		return fmt.Errorf("vsphere %s: %s: %v: %w", t.c.url, op, err, errdefs.ErrUnavailable)
	}
	return t.c.classify(err, op)
}

// logout ends the REST session; errors are only logged.
func (t *tagging) logout(ctx context.Context) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.rc == nil {
		return
	}
	if err := t.rc.Logout(ctx); err != nil {
		t.c.log.Debug("Automation API logout", "url", t.c.url.String(), "error", err)
	}
	t.rc = nil
}

// attached returns the tags of each object, "Category/Name" sorted, by
// managed object id: one bulk call, then names of ids not seen lately.
func (t *tagging) attached(ctx context.Context, refs []types.ManagedObjectReference) (map[string][]string, error) {
	out := map[string][]string{}
	if len(refs) == 0 {
		return out, nil
	}
	objs := make([]mo.Reference, len(refs))
	for i, r := range refs {
		objs[i] = r
	}
	var found []tags.AttachedTags
	err := t.do(ctx, "read the tags of VMs", func(m *tags.Manager) error {
		var err error
		found, err = m.ListAttachedTagsOnObjects(ctx, objs)
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, a := range found {
		if a.ObjectID == nil {
			continue
		}
		for _, id := range a.TagIDs {
			name, err := t.tagName(ctx, id)
			if errors.Is(err, errdefs.ErrNotFound) {
				continue // deleted since the association was read
			}
			if err != nil {
				return nil, err
			}
			ref := a.ObjectID.Reference().Value
			out[ref] = append(out[ref], name)
		}
	}
	for k, v := range out {
		slices.Sort(v)
		out[k] = slices.Compact(v)
	}
	return out, nil
}

// all lists every tag of the endpoint, "Category/Name" sorted.
func (t *tagging) all(ctx context.Context) ([]string, error) {
	var ids []string
	err := t.do(ctx, "list tags", func(m *tags.Manager) error {
		var err error
		ids, err = m.ListTags(ctx)
		return err
	})
	if err != nil {
		return nil, err
	}
	out := []string{}
	for _, id := range ids {
		name, err := t.tagName(ctx, id)
		if errors.Is(err, errdefs.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// tagName returns "Category/Name" of a tag id; ErrNotFound when the tag is
// gone.
func (t *tagging) tagName(ctx context.Context, id string) (string, error) {
	if name, ok := t.cached(id); ok {
		return name, nil
	}
	var tag *tags.Tag
	err := t.do(ctx, "read tag "+id, func(m *tags.Manager) error {
		var err error
		tag, err = m.GetTag(ctx, id)
		return err
	})
	if err != nil {
		return "", err
	}
	cat, ok := t.cached(tag.CategoryID)
	if !ok {
		var c *tags.Category
		err := t.do(ctx, "read tag category "+tag.CategoryID, func(m *tags.Manager) error {
			var err error
			c, err = m.GetCategory(ctx, tag.CategoryID)
			return err
		})
		if err != nil {
			return "", err
		}
		cat = c.Name
		t.remember(tag.CategoryID, cat)
	}
	name := cat + "/" + tag.Name
	t.remember(id, name)
	return name, nil
}

func (t *tagging) cached(id string) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n, ok := t.names[id]
	if !ok || time.Since(n.at) > nameTTL {
		return "", false
	}
	return n.name, true
}

func (t *tagging) remember(id, name string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.names == nil {
		t.names = map[string]cachedName{}
	}
	t.names[id] = cachedName{name: name, at: time.Now()}
}
