package vcsimtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/vmware/govmomi"
	"github.com/vmware/govmomi/fault"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/property"
	"github.com/vmware/govmomi/simulator"
	_ "github.com/vmware/govmomi/vapi/simulator" // the Automation API (tags) on VPX models
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// createMu serializes simulator.Model.Create, which races on a package
// global of the simulator.
var createMu sync.Mutex

// Options shape a simulated site.
type Options struct {
	// Name tells sites apart in messages: "prod", "dr".
	Name string
	// Networks are port groups added on every host, besides "VM Network".
	Networks []string
	// CBTWindow is how many bytes of a disk one QueryChangedDiskAreas
	// answer covers, so that callers have to loop. Zero means 1 MiB.
	CBTWindow int64
	// Username and Password are the only credentials the site accepts.
	// Empty means "ferry@vsphere.local" and "vcsim-Passw0rd".
	Username, Password string
	// Certificate is the server's TLS certificate. Nil means the one all
	// of Go's httptest servers share: fine for tests, but its private key
	// is public, so the lab, which other users of the machine could
	// reach, brings its own.
	Certificate *tls.Certificate
	// DeltaChains makes a snapshot taken while the VM has other snapshots
	// point at a delta disk, as on ESXi: its disk backing names the disk of
	// the VM's newest snapshot as parent. The frozen copy behind it still
	// holds the whole disk (what HotAdd presents); direct and network
	// reads refuse deltas, as they must.
	DeltaChains bool
	// RevertData makes a revert to a snapshot put the snapshot's frozen
	// disks back into the VM's disks, as vSphere's revert does for a VM
	// whose writes go through vSphere (a guest, or a HotAdd proxy writing
	// a replica). vcsim reverts metadata only, which is what vSphere shows
	// for a VM whose base disks are written behind its back (ferry's
	// direct lane: its snapshots' empty deltas all read the current base),
	// so leave it off for those.
	RevertData bool
}

// Site is one simulated vCenter: a datacenter DC0 with a cluster DC0_C0 of
// three hosts, a standalone host DC0_H0, a datastore LocalDS_0 whose files
// are local, and the networks asked for; the gaps of the simulator are
// filled (see doubles).
type Site struct {
	Name       string
	Model      *simulator.Model
	Server     *simulator.Server
	URL        string // https://127.0.0.1:PORT/sdk, without credentials
	Username   string
	Password   string
	CAFile     string // the server certificate, PEM
	Thumbprint string // its SHA-1 thumbprint, AA:BB:...
	Datacenter string
	Datastore  string
	// Datastores maps each datastore name to the folder holding its files,
	// what a real proxy would have as an NFS mount.
	Datastores map[string]string
	// Client is an administrator's session, for setting up and checking.
	Client *govmomi.Client

	d      *doubles
	folder *object.Folder       // the datacenter's VM folder
	pool   *object.ResourcePool // the cluster's root pool
	dsMu   sync.Mutex           // guards Datastores against AddHostDatastore
}

// Start starts a site for the duration of the test.
func Start(t testing.TB, opts Options) *Site {
	t.Helper()
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Err(); err != nil {
			t.Errorf("vcsimtest site %s: %v", s.Name, err)
		}
		s.Close()
	})
	return s
}

// New starts a site; Close stops it.
func New(opts Options) (*Site, error) {
	if opts.Username == "" {
		opts.Username = "ferry@vsphere.local"
	}
	if opts.Password == "" {
		opts.Password = "vcsim-Passw0rd"
	}
	if opts.CBTWindow <= 0 {
		opts.CBTWindow = 1 << 20
	}
	m := simulator.VPX()
	m.Datacenter, m.Cluster, m.ClusterHost, m.Host = 1, 1, 3, 1
	// No child resource pools: the simulator makes them by writing
	// through a pointer shared by every pool of every model (a data race).
	m.Datastore, m.Machine, m.Pool, m.Portgroup = 1, 0, 0, 1
	createMu.Lock()
	err := m.Create()
	createMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("vcsimtest: create model: %w", err)
	}
	s := &Site{Name: opts.Name, Model: m, Username: opts.Username, Password: opts.Password, Datacenter: "DC0", Datastore: "LocalDS_0",
		Datastores: map[string]string{}}
	s.d = newDoubles(s, opts.CBTWindow)
	s.d.deltaChains = opts.DeltaChains
	s.d.revertData = opts.RevertData
	for _, e := range m.Map().All("Datastore") {
		ds := e.(*simulator.Datastore)
		s.Datastores[ds.Name] = ds.Info.GetDatastoreInfo().Url
	}
	reg := m.Map()
	reg.Handler = s.d.handle
	reg.Put(s.d)
	reg.AddHandler(s.d)

	m.Service.TLS = new(tls.Config)
	if opts.Certificate != nil {
		m.Service.TLS.Certificates = []tls.Certificate{*opts.Certificate}
	}
	m.Service.Listen = &url.URL{User: url.UserPassword(opts.Username, opts.Password)}
	m.Service.RegisterEndpoints = true // before NewServer: the Automation API (tags)
	s.Server = m.Service.NewServer()
	u := *s.Server.URL
	u.User = nil
	s.URL = u.String()
	if s.CAFile, err = s.Server.CertificateFile(); err != nil {
		s.Close()
		return nil, fmt.Errorf("vcsimtest: certificate file: %w", err)
	}
	s.Thumbprint = s.Server.CertificateInfo().ThumbprintSHA1

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := *s.Server.URL
	if s.Client, err = govmomi.NewClient(ctx, &admin, true); err != nil {
		s.Close()
		return nil, fmt.Errorf("vcsimtest: admin login: %w", err)
	}
	f, err := s.Finder(ctx)
	if err == nil {
		s.folder, err = f.DefaultFolder(ctx)
	}
	if err == nil {
		s.pool, err = f.ResourcePool(ctx, "/DC0/host/DC0_C0/Resources")
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("vcsimtest: inventory: %w", err)
	}
	for _, n := range opts.Networks {
		if err := s.addNetwork(ctx, n); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Err reports what went wrong inside the simulator's doubles.
func (s *Site) Err() error {
	s.d.mu.Lock()
	defer s.d.mu.Unlock()
	return errors.Join(s.d.errs...)
}

// Close stops the site and removes its files.
func (s *Site) Close() {
	if s.Client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s.Client.Logout(ctx)
		cancel()
	}
	if s.Server != nil {
		s.Server.Close()
	}
	s.Model.Remove()
}

func (s *Site) reg() *simulator.Registry { return s.Model.Map() }

// lockCtx is an owner for the simulator's object locks.
func (s *Site) lockCtx() *simulator.Context {
	return &simulator.Context{Context: context.Background(), Map: s.reg()}
}

// Attributes returns the connection attributes of a source or target block
// for this site, verifying TLS with its certificate file.
func (s *Site) Attributes() map[string]string {
	return map[string]string{"url": s.URL, "username": s.Username, "password": s.Password, "ca_file": s.CAFile, "datacenter": s.Datacenter}
}

// Finder returns a finder in the site's datacenter.
func (s *Site) Finder(ctx context.Context) (*find.Finder, error) {
	f := find.NewFinder(s.Client.Client, true)
	dc, err := f.Datacenter(ctx, s.Datacenter)
	if err != nil {
		return nil, err
	}
	f.SetDatacenter(dc)
	return f, nil
}

// addNetwork adds a port group on every host. vcsim keeps one network
// object per datacenter, so it is added through one host's network
// system; the other hosts are then connected to it by hand (their
// "network" property), as vSphere shows a port group made on each host.
func (s *Site) addNetwork(ctx context.Context, name string) error {
	var host *simulator.HostSystem
	for _, e := range s.reg().All("HostSystem") {
		if h := e.(*simulator.HostSystem); host == nil || h.Name < host.Name {
			host = h
		}
	}
	if host == nil || host.ConfigManager.NetworkSystem == nil {
		return fmt.Errorf("vcsimtest: site %s has no host with a network system", s.Name)
	}
	ns := object.NewHostNetworkSystem(s.Client.Client, *host.ConfigManager.NetworkSystem)
	err := ns.AddPortGroup(ctx, types.HostPortGroupSpec{Name: name, VswitchName: "vSwitch0", Policy: types.HostNetworkPolicy{}})
	if err != nil && !fault.Is(err, &types.DuplicateName{}) {
		return fmt.Errorf("vcsimtest: add port group %q: %w", name, err)
	}
	var net *mo.Network
	for _, e := range s.reg().All("Network") {
		if n, ok := e.(*mo.Network); ok && n.Name == name {
			net = n
		}
	}
	if net == nil {
		return fmt.Errorf("vcsimtest: port group %q does not show as a network", name)
	}
	lctx := s.lockCtx()
	for _, e := range s.reg().All("HostSystem") {
		h := e.(*simulator.HostSystem)
		lctx.WithLock(h, func() {
			for _, ref := range h.Network {
				if ref == net.Self {
					return
				}
			}
			h.Network = append(h.Network, net.Self)
			lctx.WithLock(net, func() { net.Host = append(net.Host, h.Self) })
		})
	}
	return nil
}

// AddNetwork adds a port group on every host.
func (s *Site) AddNetwork(t testing.TB, name string) {
	t.Helper()
	if err := s.addNetwork(context.Background(), name); err != nil {
		t.Fatal(err)
	}
}

// localPath is where a datastore file ("[ds] dir/file") is on this machine.
func (s *Site) localPath(file string) (string, error) {
	ds, p, err := dsFile(file)
	if err != nil {
		return "", err
	}
	s.dsMu.Lock()
	root, ok := s.Datastores[ds]
	s.dsMu.Unlock()
	if !ok {
		return "", fmt.Errorf("no datastore %q on site %s", ds, s.Name)
	}
	return filepath.Join(root, filepath.FromSlash(p)), nil
}

// vm finds a VM by name in the simulator.
func (s *Site) vm(name string) (*simulator.VirtualMachine, error) {
	var found *simulator.VirtualMachine
	ctx := s.lockCtx()
	for _, e := range s.reg().All("VirtualMachine") {
		vm := e.(*simulator.VirtualMachine)
		n := ""
		ctx.WithLock(vm, func() { n = vm.Name })
		if n == name {
			if found != nil {
				return nil, fmt.Errorf("two VMs named %q on site %s", name, s.Name)
			}
			found = vm
		}
	}
	if found == nil {
		return nil, fmt.Errorf("no VM named %q on site %s", name, s.Name)
	}
	return found, nil
}

// VMRef returns the managed object reference of a VM.
func (s *Site) VMRef(t testing.TB, name string) types.ManagedObjectReference {
	t.Helper()
	vm, err := s.vm(name)
	if err != nil {
		t.Fatal(err)
	}
	return vm.Self
}

// VM reads a VM's properties as a client sees them.
func (s *Site) VM(t testing.TB, name string) mo.VirtualMachine {
	t.Helper()
	var out mo.VirtualMachine
	obj := object.NewVirtualMachine(s.Client.Client, s.VMRef(t, name))
	if err := obj.Properties(context.Background(), obj.Reference(), nil, &out); err != nil {
		t.Fatalf("vcsimtest: read vm %s: %v", name, err)
	}
	return out
}

// HostVMs counts the VMs on each host, by host name.
func (s *Site) HostVMs(t testing.TB) map[string]int {
	t.Helper()
	out := map[string]int{}
	ctx := s.lockCtx()
	for _, e := range s.reg().All("HostSystem") {
		h := e.(*simulator.HostSystem)
		ctx.WithLock(h, func() { out[h.Name] = len(h.Vm) })
	}
	return out
}

// VMHost names the host a VM runs on.
func (s *Site) VMHost(t testing.TB, name string) string {
	t.Helper()
	vm := s.VM(t, name)
	if vm.Runtime.Host == nil {
		t.Fatalf("vcsimtest: vm %s has no host", name)
	}
	var h mo.HostSystem
	if err := s.Client.RetrieveOne(context.Background(), *vm.Runtime.Host, []string{"name"}, &h); err != nil {
		t.Fatal(err)
	}
	return h.Name
}

// Files lists the files of a VM's folder on its datastore, relative to it.
func (s *Site) Files(t testing.TB, name string) []string {
	t.Helper()
	vm := s.VM(t, name)
	dir, err := s.localPath(vm.Config.Files.VmPathName)
	if err != nil {
		t.Fatal(err)
	}
	dir = filepath.Dir(dir)
	var out []string
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}

// Sessions counts the sessions logged in to the site now, the
// administrator's own (Client) included: what a real vCenter limits.
func (s *Site) Sessions(t testing.TB) int {
	t.Helper()
	var sm mo.SessionManager
	pc := property.DefaultCollector(s.Client.Client)
	if err := pc.RetrieveOne(context.Background(), *s.Client.ServiceContent.SessionManager, []string{"sessionList"}, &sm); err != nil {
		t.Fatalf("vcsimtest: list the sessions of %s: %v", s.Name, err)
	}
	return len(sm.SessionList)
}
