package vcsimtest

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vapi/rest"
	"github.com/vmware/govmomi/vapi/tags"
	"github.com/vmware/govmomi/vim25/types"
)

// Folders and tags of the simulated inventory. Folders are the SOAP API's
// (the simulator keeps them); tags are the Automation API's, which the
// simulator serves on a VPX model once github.com/vmware/govmomi/vapi/simulator
// is linked in (this package imports it) and the service registers its
// endpoints before it starts (New does).

// Folder creates (when missing) a folder under the datacenter's VM folder,
// path given relative to it ("web/frontend"), and returns its inventory
// path ("/DC0/vm/web/frontend").
func (s *Site) Folder(t testing.TB, path string) string {
	t.Helper()
	f, err := s.folderAt(context.Background(), path)
	if err != nil {
		t.Fatalf("vcsimtest: folder %s: %v", path, err)
	}
	return f.InventoryPath
}

// folderAt returns the folder at path under the VM folder, creating what
// is missing.
func (s *Site) folderAt(ctx context.Context, path string) (*object.Folder, error) {
	cur := s.folder
	for _, name := range strings.Split(strings.Trim(path, "/"), "/") {
		if name == "" {
			continue
		}
		f, err := s.Finder(ctx)
		if err != nil {
			return nil, err
		}
		next, err := f.Folder(ctx, cur.InventoryPath+"/"+name)
		if err != nil {
			if next, err = cur.CreateFolder(ctx, name); err != nil && !fault.Is(err, &types.DuplicateName{}) {
				return nil, err
			}
			next.InventoryPath = cur.InventoryPath + "/" + name
		}
		cur = next
	}
	return cur, nil
}

// MoveVM moves a VM into a folder under the VM folder ("web/frontend";
// "" for the VM folder itself), creating the folder when missing.
func (s *Site) MoveVM(t testing.TB, vm, path string) {
	t.Helper()
	ctx := context.Background()
	f, err := s.folderAt(ctx, path)
	if err == nil {
		var task *object.Task
		if task, err = f.MoveInto(ctx, []types.ManagedObjectReference{s.VMRef(t, vm)}); err == nil {
			err = task.Wait(ctx)
		}
	}
	if err != nil {
		t.Fatalf("vcsimtest: move vm %s to %s: %v", vm, path, err)
	}
}

// tagClient logs in to the site's Automation API as the administrator.
func (s *Site) tagClient(ctx context.Context) (*tags.Manager, error) {
	rc := rest.NewClient(s.Client.Client)
	if err := rc.Login(ctx, url.UserPassword(s.Username, s.Password)); err != nil {
		return nil, fmt.Errorf("log in to the Automation API: %w", err)
	}
	return tags.NewManager(rc), nil
}

// Tag gives a VM the tag category/name, creating the category (for VMs,
// any number of its tags per VM) and the tag when missing.
func (s *Site) Tag(t testing.TB, vm, category, name string) {
	t.Helper()
	ctx := context.Background()
	m, err := s.tagClient(ctx)
	var id string
	if err == nil {
		id, err = ensureTag(ctx, m, category, name)
	}
	if err == nil {
		err = m.AttachTag(ctx, id, s.VMRef(t, vm))
	}
	if err != nil {
		t.Fatalf("vcsimtest: tag vm %s with %s/%s: %v", vm, category, name, err)
	}
}

// Untag takes the tag category/name off a VM.
func (s *Site) Untag(t testing.TB, vm, category, name string) {
	t.Helper()
	ctx := context.Background()
	m, err := s.tagClient(ctx)
	var tag *tags.Tag
	if err == nil {
		tag, err = m.GetTagForCategory(ctx, name, category)
	}
	if err == nil {
		err = m.DetachTag(ctx, tag.ID, s.VMRef(t, vm))
	}
	if err != nil {
		t.Fatalf("vcsimtest: untag vm %s of %s/%s: %v", vm, category, name, err)
	}
}

// CreateTag creates the tag category/name (and its category) without
// giving it to any VM.
func (s *Site) CreateTag(t testing.TB, category, name string) {
	t.Helper()
	ctx := context.Background()
	m, err := s.tagClient(ctx)
	if err == nil {
		_, err = ensureTag(ctx, m, category, name)
	}
	if err != nil {
		t.Fatalf("vcsimtest: create tag %s/%s: %v", category, name, err)
	}
}

// ensureTag returns the id of tag category/name, creating what is missing.
func ensureTag(ctx context.Context, m *tags.Manager, category, name string) (string, error) {
	cat, err := m.GetCategory(ctx, category)
	if err != nil {
		id, cerr := m.CreateCategory(ctx, &tags.Category{Name: category, Cardinality: "MULTIPLE", AssociableTypes: []string{"VirtualMachine"}})
		if cerr != nil {
			return "", fmt.Errorf("create category %s: %w (after %v)", category, cerr, err)
		}
		cat = &tags.Category{ID: id, Name: category}
	}
	if tag, err := m.GetTagForCategory(ctx, name, cat.ID); err == nil {
		return tag.ID, nil
	}
	return m.CreateTag(ctx, &tags.Tag{Name: name, CategoryID: cat.ID})
}

// ESX is a simulated standalone ESXi host: the SOAP API without vCenter's
// Automation API, so without tags. It has the simulator's two default VMs,
// ha-host_VM0 and ha-host_VM1, in the datacenter ha-datacenter.
type ESX struct {
	Model    *simulator.Model
	Server   *simulator.Server
	URL      string // https://127.0.0.1:PORT/sdk, without credentials
	Username string
	Password string
	CAFile   string
}

// StartESX starts a simulated ESXi host for the duration of the test.
func StartESX(t testing.TB) *ESX {
	t.Helper()
	m := simulator.ESX()
	createMu.Lock()
	err := m.Create()
	createMu.Unlock()
	if err != nil {
		t.Fatalf("vcsimtest: create ESX model: %v", err)
	}
	e := &ESX{Model: m, Username: "root", Password: "vcsim-Passw0rd"}
	m.Service.TLS = new(tls.Config)
	m.Service.RegisterEndpoints = true // registers nothing on a host: no Automation API
	m.Service.Listen = &url.URL{User: url.UserPassword(e.Username, e.Password)}
	e.Server = m.Service.NewServer()
	t.Cleanup(func() {
		e.Server.Close()
		m.Remove()
	})
	u := *e.Server.URL
	u.User = nil
	e.URL = u.String()
	if e.CAFile, err = e.Server.CertificateFile(); err != nil {
		t.Fatalf("vcsimtest: certificate file: %v", err)
	}
	return e
}

// Attributes returns the connection attributes of a source block for the
// host, verifying TLS with its certificate file.
func (e *ESX) Attributes() map[string]string {
	return map[string]string{"url": e.URL, "username": e.Username, "password": e.Password, "ca_file": e.CAFile}
}
