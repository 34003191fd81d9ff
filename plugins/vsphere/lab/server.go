package lab

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"log"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/view"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"

	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// server is the lab's long-lived process: two simulated vCenters and the
// control socket.
type server struct {
	dir     string
	socket  string
	log     *log.Logger
	started time.Time
	vms     []labVM
	prod    *vcsimtest.Site
	dr      *vcsimtest.Site // the dr site of a two-vCenter lab
	hv      *simhost.Host   // that of a mixed lab (--dr hyperv)
	ln      net.Listener

	mu  sync.Mutex // one request uses the sites at a time
	rng *mrand.Rand

	stopOnce sync.Once
	stopping chan struct{} // closed when a stop was asked for
	wg       sync.WaitGroup
}

// startServer builds the lab: the sites (the dr one of kind drKind), the
// VMs with their data, the configuration folder, the control socket and,
// last, the state file that says the lab is up. On an error everything
// made is undone.
func startServer(ctx context.Context, dir, socket, drKind string, vms []labVM, logger *log.Logger) (_ *server, err error) {
	s := &server{dir: dir, socket: socket, log: logger, vms: vms, started: time.Now().UTC(), stopping: make(chan struct{}),
		rng: mrand.New(mrand.NewPCG(seedOf(time.Now().String()), seedOf(dir)))}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	password, err := makePassword()
	if err != nil {
		return nil, err
	}
	prodCert, err := newCertificate("prod")
	if err != nil {
		return nil, err
	}
	if s.prod, err = vcsimtest.New(vcsimtest.Options{Name: "prod", Username: username, Password: password, CBTWindow: cbtWindow, Certificate: prodCert}); err != nil {
		return nil, fmt.Errorf("start the prod site: %w", err)
	}
	s.log.Printf("prod site: %s, datastore %s", s.prod.URL, s.prod.Datastores[s.prod.Datastore])
	switch drKind {
	case drHyperV:
		if s.hv, err = simhost.Open(filepath.Join(dir, sitesDir, hypervDir), drSwitch); err != nil {
			return nil, fmt.Errorf("start the dr site: %w", err)
		}
		s.log.Printf("dr site: a simulated Hyper-V host in %s", s.hv.Dir())
	default:
		drCert, err := newCertificate("dr")
		if err != nil {
			return nil, err
		}
		if s.dr, err = vcsimtest.New(vcsimtest.Options{Name: "dr", Username: username, Password: password, CBTWindow: cbtWindow, Certificate: drCert,
			Networks: []string{drNet}}); err != nil {
			return nil, fmt.Errorf("start the dr site: %w", err)
		}
		s.log.Printf("dr site: %s, datastore %s", s.dr.URL, s.dr.Datastores[s.dr.Datastore])
	}
	for _, vm := range vms {
		if err := s.createVM(ctx, vm); err != nil {
			return nil, err
		}
	}
	if err := s.prod.Err(); err != nil {
		return nil, err
	}

	cfgDir := filepath.Join(dir, configDir)
	if err := os.MkdirAll(cfgDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, repoDir), 0o700); err != nil {
		return nil, err
	}
	pem, err := os.ReadFile(s.prod.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read the prod site's certificate: %w", err)
	}
	const caFile = "prod-ca.pem"
	if err := writeFile(filepath.Join(cfgDir, caFile), pem, 0o644); err != nil {
		return nil, err
	}
	prod := siteInfo(s.prod)
	prod.CAFile = caFile
	var dr SiteInfo
	var cfg string
	if s.hv != nil {
		dr = SiteInfo{Name: "dr", Kind: siteHyperVSim, URL: s.hv.Name(), DatastorePath: s.hv.Dir()}
		cfg = renderMixedConfig(configInput{Dir: dir, Password: password, Prod: prod, DR: dr, VMs: vmNames(vms)})
	} else {
		dr = siteInfo(s.dr)
		cfg = renderConfig(configInput{Dir: dir, Password: password, Prod: prod, DR: dr, VMs: vmNames(vms)})
	}
	if err := writeFile(filepath.Join(cfgDir, configFile), []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	prod.CAFile = filepath.Join(cfgDir, caFile)

	os.Remove(socket) // left by a server that was killed
	if s.ln, err = net.Listen("unix", socket); err != nil {
		return nil, fmt.Errorf("listen on %s: %w", socket, err)
	}
	if err := os.Chmod(socket, 0o600); err != nil {
		return nil, err
	}
	st := &State{Version: stateVersion, PID: os.Getpid(), Socket: socket, Started: s.started, Config: cfgDir, Job: jobName,
		DR: drKind, Sites: []SiteInfo{prod, dr}, VMs: vmNames(vms)}
	if err := saveState(dir, st); err != nil {
		return nil, fmt.Errorf("write the lab state: %w", err)
	}
	return s, nil
}

func siteInfo(s *vcsimtest.Site) SiteInfo {
	return SiteInfo{Name: s.Name, URL: s.URL, Username: s.Username, Thumbprint: s.Thumbprint, CAFile: s.CAFile,
		Datacenter: s.Datacenter, Datastore: s.Datastore, DatastorePath: s.Datastores[s.Datastore]}
}

// makePassword makes the lab's password: the sites listen on loopback,
// where other users of the machine could log in with a well-known one.
func makePassword() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("make a password: %w", err)
	}
	return fmt.Sprintf("lab-%x", b), nil
}

func seedOf(s string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(s))
	return h.Sum64()
}

// createVM creates a powered-on prod VM with VMware Tools reporting its
// address, and fills its disks with data laid out from its name (the
// same on every up).
func (s *server) createVM(ctx context.Context, vm labVM) error {
	_, err := s.prod.AddVM(ctx, vcsimtest.VMSpec{Name: vm.name, Disks: vm.disks, CPUs: vm.cpus, MemoryMB: vm.memoryMB, PoweredOn: true, Tools: true,
		Firmware: vm.firmware, GuestID: vm.guestID, SCSIModel: vm.scsiModel, NICModel: vm.nicModel,
		NICs: []vcsimtest.NICSpec{{Network: prodNet, Addresses: []string{vm.ip}, Gateway: prodGW, DNS: []string{prodDNS}}}})
	if err != nil {
		return fmt.Errorf("create vm %s: %w", vm.name, err)
	}
	rng := mrand.New(mrand.NewPCG(seedOf(vm.name), 1))
	buf := make([]byte, 1<<20)
	var written int64
	for d, size := range vm.disks {
		for _, r := range diskLayout(rng, size) {
			for off := r.off; off < r.off+r.len; off += int64(len(buf)) {
				b := buf[:min(int64(len(buf)), r.off+r.len-off)]
				fill(rng, r.kind, b)
				if err := s.prod.GuestWrite(vm.name, d, off, b); err != nil {
					return err
				}
				written += int64(len(b))
			}
		}
	}
	s.log.Printf("vm %s: %d disks, %d MiB of data written", vm.name, len(vm.disks), written>>20)
	return nil
}

// serve answers requests until a stop is asked for or ctx ends, then
// closes everything it started.
func (s *server) serve(ctx context.Context) {
	go func() {
		select {
		case <-ctx.Done():
			s.log.Printf("stopping: %v", ctx.Err())
			s.stop()
		case <-s.stopping:
		}
	}()
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			select {
			case <-s.stopping:
			default:
				s.log.Printf("accept: %v; stopping", err)
				s.stop()
			}
			break
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.handle(ctx, conn)
		}()
	}
	s.wg.Wait()
	s.close()
}

// stop ends serve: no new requests; those under way finish.
func (s *server) stop() {
	s.stopOnce.Do(func() {
		close(s.stopping)
		if s.ln != nil {
			s.ln.Close()
		}
	})
}

// close stops the sites and removes their files and the socket. The
// state and the configuration stay for `down` to remove once this
// process is gone.
func (s *server) close() {
	for _, site := range []*vcsimtest.Site{s.prod, s.dr} {
		if site == nil {
			continue
		}
		if err := site.Err(); err != nil {
			s.log.Printf("site %s: %v", site.Name, err)
		}
		site.Close()
	}
	if s.ln != nil {
		s.ln.Close()
		os.Remove(s.socket)
	}
	os.RemoveAll(filepath.Join(s.dir, sitesDir))
	s.log.Printf("stopped")
}

func (s *server) handle(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var req request
	if err := json.NewDecoder(conn).Decode(&req); err != nil {
		s.log.Printf("a bad request: %v", err)
		return
	}
	conn.SetReadDeadline(time.Time{})
	resp := s.answer(ctx, req)
	if resp.Error != "" {
		s.log.Printf("%s %s: %s", req.Op, req.VM, resp.Error)
	}
	conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := json.NewEncoder(conn).Encode(resp); err != nil {
		s.log.Printf("answer %s: %v", req.Op, err)
	}
	if req.Op == opStop {
		s.log.Printf("stop asked for")
		s.stop()
	}
}

func (s *server) answer(ctx context.Context, req request) response {
	switch req.Op {
	case opPing, opStop:
		return response{PID: os.Getpid()}
	case opStatus:
		st, err := s.status(ctx)
		if err != nil {
			return failed(err)
		}
		return response{PID: os.Getpid(), Status: st}
	case opWrite:
		w, err := s.write(req.VM, req.Disk, req.Count)
		if err != nil {
			return failed(err)
		}
		return response{PID: os.Getpid(), Writes: w}
	case opVerify:
		v, err := s.verify(ctx, req.VM)
		if err != nil {
			return failed(err)
		}
		return response{PID: os.Getpid(), Verify: v}
	}
	return failed(classf(errdefs.ErrInvalidArgument, "unknown request %q", req.Op))
}

func failed(err error) response {
	return response{Error: err.Error(), Class: errdefs.Class(err)}
}

// write makes count guest writes of disk-like data into a prod VM, seen by
// changed block tracking as a guest's writes are.
func (s *server) write(vm string, disk, count int) ([]Write, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	known := false
	for _, v := range s.vms {
		known = known || v.name == vm
	}
	if !known {
		return nil, classf(errdefs.ErrNotFound, "vm %q is not a VM of the lab's prod site (%s)", vm, strings.Join(vmNames(s.vms), ", "))
	}
	sizes, err := s.prod.DiskSizes(vm)
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", vm, err)
	}
	if disk >= len(sizes) {
		return nil, classf(errdefs.ErrInvalidArgument, "vm %q has %d disks (0 to %d), no disk %d", vm, len(sizes), len(sizes)-1, disk)
	}
	if count < 1 || count > 10000 {
		return nil, classf(errdefs.ErrInvalidArgument, "vm %q: %d writes: from 1 to 10000", vm, count)
	}
	writes := scatter(s.rng, sizes, disk, count)
	for _, w := range writes {
		b := make([]byte, w.Length)
		fill(s.rng, kind(1+s.rng.IntN(2)), b)
		if err := s.prod.GuestWrite(vm, w.Disk, w.Offset, b); err != nil {
			return nil, fmt.Errorf("vm %q: %w", vm, err)
		}
	}
	s.log.Printf("vm %s: %d guest writes", vm, len(writes))
	return writes, nil
}

// status reads both sites' VMs through the vSphere API.
func (s *server) status(ctx context.Context) (*Status, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &Status{Dir: s.dir, PID: os.Getpid(), Started: s.started, Config: filepath.Join(s.dir, configDir)}
	for _, site := range []*vcsimtest.Site{s.prod, s.dr} {
		if site == nil {
			continue
		}
		ss, err := siteStatus(ctx, site)
		if err != nil {
			return nil, fmt.Errorf("site %s: %w", site.Name, err)
		}
		st.Sites = append(st.Sites, ss)
		if err := site.Err(); err != nil {
			st.Problems = append(st.Problems, fmt.Sprintf("site %s: %v", site.Name, err))
		}
	}
	if s.hv != nil {
		ss, err := hypervStatus(ctx, s.hv)
		if err != nil {
			return nil, fmt.Errorf("site dr: %w", err)
		}
		st.Sites = append(st.Sites, ss)
	}
	return st, nil
}

func siteStatus(ctx context.Context, site *vcsimtest.Site) (SiteStatus, error) {
	out := SiteStatus{Name: site.Name, URL: site.URL, VMs: []VMStatus{}}
	c := site.Client.Client
	v, err := view.NewManager(c).CreateContainerView(ctx, c.ServiceContent.RootFolder, []string{"VirtualMachine"}, true)
	if err != nil {
		return out, err
	}
	defer v.Destroy(context.WithoutCancel(ctx))
	var vms []mo.VirtualMachine
	if err := v.Retrieve(ctx, []string{"VirtualMachine"}, []string{"name", "runtime.powerState", "guest", "config.hardware.device", "snapshot"}, &vms); err != nil {
		return out, err
	}
	for _, vm := range vms {
		out.VMs = append(out.VMs, vmStatus(vm))
	}
	sort.Slice(out.VMs, func(i, j int) bool { return out.VMs[i].Name < out.VMs[j].Name })
	return out, nil
}

func vmStatus(vm mo.VirtualMachine) VMStatus {
	st := VMStatus{Name: vm.Name, PowerState: string(vm.Runtime.PowerState), NICs: []NICStatus{}, Disks: []int64{}}
	guestNet := map[int32][]string{}
	if vm.Guest != nil {
		st.IPAddress = vm.Guest.IpAddress
		for _, n := range vm.Guest.Net {
			guestNet[n.DeviceConfigId] = append(guestNet[n.DeviceConfigId], n.IpAddress...)
		}
	}
	if vm.Config != nil {
		devices := object.VirtualDeviceList(vm.Config.Hardware.Device)
		sort.Slice(devices, func(i, j int) bool { return devices[i].GetVirtualDevice().Key < devices[j].GetVirtualDevice().Key })
		for _, d := range devices {
			switch d := d.(type) {
			case *types.VirtualDisk:
				size := d.CapacityInBytes
				if size == 0 {
					size = d.CapacityInKB * 1024
				}
				st.Disks = append(st.Disks, size)
			case types.BaseVirtualEthernetCard:
				card := d.GetVirtualEthernetCard()
				n := NICStatus{Addresses: guestNet[card.Key]}
				switch b := card.Backing.(type) {
				case *types.VirtualEthernetCardNetworkBackingInfo:
					n.Network = b.DeviceName
				case *types.VirtualEthernetCardDistributedVirtualPortBackingInfo:
					n.Network = b.Port.PortgroupKey
				}
				st.NICs = append(st.NICs, n)
			}
		}
	}
	if vm.Snapshot != nil {
		st.Snapshots = countSnapshots(vm.Snapshot.RootSnapshotList)
	}
	return st
}

func countSnapshots(trees []types.VirtualMachineSnapshotTree) int {
	n := 0
	for _, t := range trees {
		n += 1 + countSnapshots(t.ChildSnapshotList)
	}
	return n
}
