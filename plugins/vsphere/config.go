package vsphere

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk/errdefs"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// MaxRestorePoints is the most restore points a replica on a vSphere
// target may keep. A restore point is a VMware snapshot of the replica, and
// VMware supports at most 32 snapshots in a chain; like Veeam, ferry keeps
// room for the snapshots of its own operations (failover, the working
// state) and allows 28. The target declares it (TargetLimits), so a job
// asking for more is a configuration error ferry reports at the job's
// restore_points.
const MaxRestorePoints = 28

// maxRestorePointsReason is the why users read with that error.
const maxRestorePointsReason = "a restore point on vSphere is a snapshot of the replica, VMware supports at most 32 snapshots in a chain, and ferry keeps room for snapshots of its own operations, as Veeam does"

// Transport modes of the source's disk reads.
const (
	TransportAuto    = "auto"    // direct when it can, else hotadd when it can, else network; hotadd first for delta disks
	TransportDirect  = "direct"  // the flat file under local_datastore_paths (direct storage access)
	TransportHotAdd  = "hotadd"  // the snapshot's disk attached to the proxy VM this plugin runs in, read as a block device
	TransportNetwork = "network" // ranged GETs on the datastore's HTTP /folder interface
)

// DefaultDeviceDir is where a Linux proxy's udev names disks by their
// identifiers, the WWN among them.
const DefaultDeviceDir = "/dev/disk/by-id"

// connConfig is what both components need to reach a vCenter or ESXi host.
type connConfig struct {
	URL        string
	Username   string
	Password   string
	Insecure   bool
	CAFile     string
	Thumbprint string
	Datacenter string
	Datastores map[string]string // datastore name -> local mount path
}

// sourceConfig is the body of a source "vsphere" block.
type sourceConfig struct {
	connConfig
	Transport string
	// HotAddProxy names the proxy VM (id, inventory path or name); empty
	// means the VM whose BIOS UUID this machine reports.
	HotAddProxy string
	// DeviceDir is where the proxy's guest names disks by WWN.
	DeviceDir string

	// Not settable in HCL; tests point them elsewhere.
	productUUIDFile string        // this machine's BIOS UUID; default /sys/class/dmi/id/product_uuid
	deviceWait      time.Duration // how long a hot-added disk may take to appear; default 60 s
}

// targetConfig is the body of a target "vsphere" block.
type targetConfig struct {
	connConfig
	Datastore    string
	Folder       string
	ResourcePool string
	Cluster      string
	Host         string
	// Transport is how replica disks are written: TransportDirect (the
	// datastore's mount) or TransportHotAdd (attached to the proxy VM);
	// decodeTarget resolves "auto".
	Transport string
	// StateDir holds the ferry folders of replicas written through
	// HotAdd (the datastore is not mounted here).
	StateDir    string
	HotAddProxy string
	DeviceDir   string
	// IsolatedNetwork is the port group test VMs' NICs go on when a
	// test's network map does not map their network.
	IsolatedNetwork string

	// Not settable in HCL; tests point them elsewhere.
	productUUIDFile string
	deviceWait      time.Duration
}

func connAttributes() map[string]*schema.Attribute {
	return map[string]*schema.Attribute{
		"url": {Type: cty.String, Required: true,
			Description: "The vCenter or ESXi SDK endpoint, e.g. https://vc.example.com/sdk (the path defaults to /sdk)."},
		"username": {Type: cty.String, Required: true, Description: "The user to log in as; use env() rather than writing it here."},
		"password": {Type: cty.String, Required: true, Sensitive: true, Description: "The password; use env()."},
		"insecure": {Type: cty.Bool,
			Description: "Accept any server certificate. Only for labs: it allows a man in the middle to read the credentials."},
		"ca_file": {Type: cty.String, Path: true,
			Description: "A PEM file of the certificate authorities to verify the server certificate with (instead of the system's)."},
		"thumbprint": {Type: cty.String,
			Description: "The SHA-1 (or SHA-256) thumbprint of the server certificate, AA:BB:...; pins that exact certificate."},
		"datacenter": {Type: cty.String, Description: "The datacenter to work in; required when the endpoint has several."},
		"local_datastore_paths": {Type: cty.Map(cty.String),
			Description: "Direct storage access: datastore name = absolute path where this machine mounts it (NFS, or a local datastore)."},
	}
}

func sourceSchema() *schema.Block {
	attrs := connAttributes()
	attrs["transport"] = &schema.Attribute{Type: cty.String,
		Description: `How disks are read: "auto" (default: direct when the datastore is mapped, else hotadd when this machine is a proxy VM that can, else network), "direct", "hotadd" or "network".`}
	attrs["hotadd_proxy"] = &schema.Attribute{Type: cty.String,
		Description: "HotAdd: the proxy VM this plugin runs in (id, inventory path or name); default: the VM whose BIOS UUID this machine reports."}
	attrs["hotadd_device_dir"] = &schema.Attribute{Type: cty.String,
		Description: "HotAdd: the folder where the proxy's udev names disks by WWN (wwn-0x<disk UUID>); default " + DefaultDeviceDir + "."}
	return &schema.Block{
		Description: "A vCenter or ESXi host whose VMs are replicated.",
		Attributes:  attrs,
	}
}

func targetSchema() *schema.Block {
	attrs := connAttributes()
	attrs["datastore"] = &schema.Attribute{Type: cty.String, Required: true,
		Description: "The datastore replicas are created on. Listed in local_datastore_paths, replica disks are written directly; otherwise through HotAdd (state_dir is then required)."}
	attrs["transport"] = &schema.Attribute{Type: cty.String,
		Description: `How replica disks are written: "auto" (default: direct when the datastore is in local_datastore_paths, else hotadd), "direct" or "hotadd".`}
	attrs["state_dir"] = &schema.Attribute{Type: cty.String, Path: true,
		Description: "HotAdd: the folder that keeps each replica's ferry state and restore point undo data (on durable storage; the datastore is not mounted here)."}
	attrs["hotadd_proxy"] = &schema.Attribute{Type: cty.String,
		Description: "HotAdd: the proxy VM this plugin runs in (id, inventory path or name); default: the VM whose BIOS UUID this machine reports."}
	attrs["hotadd_device_dir"] = &schema.Attribute{Type: cty.String,
		Description: "HotAdd: the folder where the proxy's udev names disks by WWN (wwn-0x<disk UUID>); default " + DefaultDeviceDir + "."}
	attrs["isolated_network"] = &schema.Attribute{Type: cty.String,
		Description: "The port group (standard or distributed) test failover VMs are connected to when the test's network map does not map their network; without it such a test is refused. It must reach no production network."}
	attrs["folder"] = &schema.Attribute{Type: cty.String, Description: "The VM folder replicas go in (inventory path or name); default the datacenter's vm folder."}
	attrs["resource_pool"] = &schema.Attribute{Type: cty.String, Description: "The resource pool replicas run in (inventory path or name); default the root pool of the cluster or host."}
	attrs["cluster"] = &schema.Attribute{Type: cty.String, Description: "The cluster replicas go to; each lands on the connected host with the fewest VMs."}
	attrs["host"] = &schema.Attribute{Type: cty.String, Description: "The host replicas go to, instead of a cluster."}
	return &schema.Block{
		Description: "A vCenter or ESXi host that keeps replicas; restore points are snapshots of the replica VMs.",
		Attributes:  attrs,
	}
}

// attr returns a known, non-null attribute of an object value, or false.
func attr(cfg cty.Value, name string) (cty.Value, bool) {
	if cfg.IsNull() || !cfg.IsKnown() || !cfg.Type().IsObjectType() || !cfg.Type().HasAttribute(name) {
		return cty.NilVal, false
	}
	v := cfg.GetAttr(name)
	if v.IsNull() || !v.IsKnown() {
		return cty.NilVal, false
	}
	return v, true
}

func stringAttr(cfg cty.Value, name string) (string, bool) {
	v, ok := attr(cfg, name)
	if !ok || !v.Type().Equals(cty.String) {
		return "", false
	}
	return v.AsString(), true
}

// validateConn checks the connection attributes without touching the
// network. Unknown values (from env() at validate time) are skipped.
func validateConn(cfg cty.Value) schema.Diagnostics {
	var diags schema.Diagnostics
	if u, ok := stringAttr(cfg, "url"); ok {
		if _, err := parseURL(u); err != nil {
			diags.Errorf(cty.GetAttrPath("url"), "Invalid URL", "%v", err)
		} else if strings.HasPrefix(strings.ToLower(u), "http://") {
			diags = append(diags, schema.Diagnostic{Severity: schema.Warning, Summary: "Plain HTTP",
				Detail: "the password travels unencrypted; vCenter and ESXi speak HTTPS", Path: cty.GetAttrPath("url")})
		}
	}
	for _, name := range []string{"username", "password"} {
		if s, ok := stringAttr(cfg, name); ok && s == "" {
			diags.Errorf(cty.GetAttrPath(name), "Empty "+name, "vSphere refuses an empty %s", name)
		}
	}
	insecure := false
	if v, ok := attr(cfg, "insecure"); ok && v.True() {
		insecure = true
	}
	caFile, hasCA := stringAttr(cfg, "ca_file")
	tp, hasTP := stringAttr(cfg, "thumbprint")
	switch {
	case insecure && (hasCA || hasTP):
		diags.Errorf(cty.GetAttrPath("insecure"), "Conflicting TLS settings",
			"insecure = true accepts any certificate, so ca_file and thumbprint would be ignored; remove insecure")
	case hasCA && hasTP:
		diags.Errorf(cty.GetAttrPath("thumbprint"), "Conflicting TLS settings",
			"set either ca_file (verify against certificate authorities) or thumbprint (pin one certificate), not both")
	}
	if hasCA && (caFile == "" || !filepath.IsAbs(caFile)) {
		diags.Errorf(cty.GetAttrPath("ca_file"), "Invalid ca_file", "%q is not an absolute path; the host resolves paths before they reach the plugin", caFile)
	}
	if hasTP {
		if _, err := normalizeThumbprint(tp); err != nil {
			diags.Errorf(cty.GetAttrPath("thumbprint"), "Invalid thumbprint", "%v", err)
		}
	}
	if dc, ok := stringAttr(cfg, "datacenter"); ok && dc == "" {
		diags.Errorf(cty.GetAttrPath("datacenter"), "Empty datacenter", "name a datacenter or leave the attribute out")
	}
	if m, ok := attr(cfg, "local_datastore_paths"); ok && m.Type().IsMapType() {
		for it := m.ElementIterator(); it.Next(); {
			k, v := it.Element()
			path := cty.GetAttrPath("local_datastore_paths").Index(k)
			switch {
			case k.AsString() == "":
				diags.Errorf(cty.GetAttrPath("local_datastore_paths"), "Empty datastore name", "every key must name a datastore")
			case !v.IsKnown() || v.IsNull():
			case !filepath.IsAbs(v.AsString()):
				diags.Errorf(path, "Relative path", "the mount path of datastore %q must be absolute, got %q", k.AsString(), v.AsString())
			}
		}
	}
	return diags
}

// validateSource checks a source block.
func validateSource(cfg cty.Value) schema.Diagnostics {
	diags := validateConn(cfg)
	tr, hasTransport := stringAttr(cfg, "transport")
	if hasTransport {
		switch tr {
		case TransportAuto, TransportDirect, TransportHotAdd, TransportNetwork:
		default:
			diags.Errorf(cty.GetAttrPath("transport"), "Unknown transport", "%q is none of %q, %q, %q, %q", tr, TransportAuto, TransportDirect, TransportHotAdd, TransportNetwork)
		}
	}
	if p, ok := stringAttr(cfg, "hotadd_proxy"); ok {
		switch {
		case p == "":
			diags.Errorf(cty.GetAttrPath("hotadd_proxy"), "Empty hotadd_proxy", "name the proxy VM or leave the attribute out (the VM this machine is is found by its BIOS UUID)")
		case hasTransport && (tr == TransportDirect || tr == TransportNetwork):
			diags = append(diags, schema.Diagnostic{Severity: schema.Warning, Summary: "HotAdd proxy unused",
				Detail: fmt.Sprintf("transport = %q never reads through the proxy; hotadd_proxy only makes ferry detach its leftover disks from it", tr), Path: cty.GetAttrPath("hotadd_proxy")})
		}
	}
	if d, ok := stringAttr(cfg, "hotadd_device_dir"); ok && (d == "" || !filepath.IsAbs(d)) {
		diags.Errorf(cty.GetAttrPath("hotadd_device_dir"), "Invalid hotadd_device_dir", "%q is not an absolute path; the default is %s", d, DefaultDeviceDir)
	}
	return diags
}

// validateTarget checks a target block: placement that makes sense, and a
// way to write replica disks (the datastore mapped, or HotAdd with a
// state folder).
func validateTarget(cfg cty.Value) schema.Diagnostics {
	diags := validateConn(cfg)
	_, hasCluster := stringAttr(cfg, "cluster")
	_, hasHost := stringAttr(cfg, "host")
	if hasCluster && hasHost {
		diags.Errorf(cty.GetAttrPath("host"), "Conflicting placement",
			"set cluster (ferry picks the host with the fewest VMs) or host (pinned), not both")
	}
	for _, name := range []string{"datastore", "folder", "resource_pool", "cluster", "host"} {
		if s, ok := stringAttr(cfg, name); ok && s == "" {
			diags.Errorf(cty.GetAttrPath(name), "Empty "+name, "name one or leave the attribute out")
		}
	}
	tr, hasTransport := stringAttr(cfg, "transport")
	if hasTransport {
		switch tr {
		case TransportAuto, TransportDirect, TransportHotAdd:
		default:
			diags.Errorf(cty.GetAttrPath("transport"), "Unknown transport", "%q is none of %q, %q, %q (a target writes; the network transport cannot)", tr, TransportAuto, TransportDirect, TransportHotAdd)
		}
	}
	stateDir, hasState := stringAttr(cfg, "state_dir")
	if hasState && (stateDir == "" || !filepath.IsAbs(stateDir)) {
		diags.Errorf(cty.GetAttrPath("state_dir"), "Invalid state_dir", "%q is not an absolute path", stateDir)
	}
	if p, ok := stringAttr(cfg, "hotadd_proxy"); ok && p == "" {
		diags.Errorf(cty.GetAttrPath("hotadd_proxy"), "Empty hotadd_proxy", "name the proxy VM or leave the attribute out (the VM this machine is is found by its BIOS UUID)")
	}
	if d, ok := stringAttr(cfg, "hotadd_device_dir"); ok && (d == "" || !filepath.IsAbs(d)) {
		diags.Errorf(cty.GetAttrPath("hotadd_device_dir"), "Invalid hotadd_device_dir", "%q is not an absolute path; the default is %s", d, DefaultDeviceDir)
	}
	ds, hasDS := stringAttr(cfg, "datastore")
	known := func(name string) bool { return !cfg.Type().HasAttribute(name) || cfg.GetAttr(name).IsKnown() }
	if hasDS && ds != "" && known("local_datastore_paths") && known("state_dir") {
		m, ok := attr(cfg, "local_datastore_paths")
		mapped := ok && m.Type().IsMapType() && m.LengthInt() > 0 && m.HasIndex(cty.StringVal(ds)).True()
		switch {
		case tr == TransportHotAdd && !hasState:
			diags.Errorf(cty.GetAttrPath("state_dir"), "No state_dir",
				"a target that writes through HotAdd keeps each replica's ferry state and restore point undo data in state_dir (the datastore is not mounted on this machine): set state_dir to a folder on durable storage")
		case tr == TransportDirect && !mapped:
			diags.Errorf(cty.GetAttrPath("local_datastore_paths"), "Datastore not mapped",
				"transport = %q writes replica disks directly: map datastore %q to where this machine mounts it, e.g. local_datastore_paths = { %q = \"/mnt/%s\" } "+
					"(the datastore HTTP interface can only replace whole files)", tr, ds, ds, ds)
		case tr != TransportHotAdd && tr != TransportDirect && !mapped && !hasState:
			diags.Errorf(cty.GetAttrPath("local_datastore_paths"), "Datastore not mapped",
				"the target writes replica disks directly or through HotAdd: map datastore %q to where this machine mounts it, e.g. local_datastore_paths = { %q = \"/mnt/%s\" } "+
					"(the datastore HTTP interface can only replace whole files), or set state_dir to write through HotAdd from a proxy VM", ds, ds, ds)
		}
	}
	return diags
}

// parseURL parses an SDK endpoint: https by default, path /sdk by default,
// no credentials in it.
func parseURL(s string) (*url.URL, error) {
	if strings.TrimSpace(s) == "" {
		return nil, fmt.Errorf("the URL is empty")
	}
	if !strings.Contains(s, "://") {
		s = "https://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, err
	}
	switch u.Scheme {
	case "https", "http":
	default:
		return nil, fmt.Errorf("scheme %q: want https", u.Scheme)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%q names no host", s)
	}
	if u.User != nil {
		return nil, fmt.Errorf("put credentials in username and password, not in the URL")
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = "/sdk"
	}
	return u, nil
}

// normalizeThumbprint accepts a SHA-1 or SHA-256 certificate thumbprint in
// hex, with or without colons, in any case, and returns it as upper-case
// pairs separated by colons (the form vSphere shows).
func normalizeThumbprint(s string) (string, error) {
	clean := strings.ReplaceAll(strings.TrimSpace(s), ":", "")
	raw, err := hex.DecodeString(clean)
	if err != nil {
		return "", fmt.Errorf("%q is not hexadecimal pairs such as AB:CD:EF", s)
	}
	if len(raw) != 20 && len(raw) != 32 {
		return "", fmt.Errorf("%q has %d bytes; a SHA-1 thumbprint has 20, a SHA-256 one 32", s, len(raw))
	}
	return formatThumbprint(raw), nil
}

func formatThumbprint(raw []byte) string {
	pairs := make([]string, len(raw))
	for i, b := range raw {
		pairs[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(pairs, ":")
}

func decodeConn(cfg cty.Value) connConfig {
	str := func(name string) string { v, _ := stringAttr(cfg, name); return v }
	c := connConfig{
		URL: str("url"), Username: str("username"), Password: str("password"),
		CAFile: str("ca_file"), Thumbprint: str("thumbprint"), Datacenter: str("datacenter"),
		Datastores: map[string]string{},
	}
	if v, ok := attr(cfg, "insecure"); ok {
		c.Insecure = v.True()
	}
	if m, ok := attr(cfg, "local_datastore_paths"); ok && m.Type().IsMapType() {
		for it := m.ElementIterator(); it.Next(); {
			k, v := it.Element()
			if v.IsKnown() && !v.IsNull() {
				c.Datastores[k.AsString()] = filepath.Clean(v.AsString())
			}
		}
	}
	if c.Thumbprint != "" {
		c.Thumbprint, _ = normalizeThumbprint(c.Thumbprint)
	}
	return c
}

func decodeSource(cfg cty.Value) (*sourceConfig, error) {
	if err := validateSource(cfg).Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	c := &sourceConfig{connConfig: decodeConn(cfg), Transport: TransportAuto}
	if err := c.connConfig.complete(); err != nil {
		return nil, err
	}
	if tr, ok := stringAttr(cfg, "transport"); ok {
		c.Transport = tr
	}
	c.HotAddProxy, _ = stringAttr(cfg, "hotadd_proxy")
	c.DeviceDir = DefaultDeviceDir
	if d, ok := stringAttr(cfg, "hotadd_device_dir"); ok {
		c.DeviceDir = filepath.Clean(d)
	}
	return c, nil
}

func decodeTarget(cfg cty.Value) (*targetConfig, error) {
	if err := validateTarget(cfg).Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdefs.ErrInvalidArgument)
	}
	str := func(name string) string { v, _ := stringAttr(cfg, name); return v }
	c := &targetConfig{connConfig: decodeConn(cfg), Datastore: str("datastore"), Folder: str("folder"),
		ResourcePool: str("resource_pool"), Cluster: str("cluster"), Host: str("host"), IsolatedNetwork: str("isolated_network")}
	if err := c.connConfig.complete(); err != nil {
		return nil, err
	}
	if c.Datastore == "" {
		return nil, fmt.Errorf("datastore is required: %w", errdefs.ErrInvalidArgument)
	}
	c.Transport = TransportDirect
	tr, _ := stringAttr(cfg, "transport")
	if _, mapped := c.Datastores[c.Datastore]; tr == TransportHotAdd || (tr != TransportDirect && !mapped) {
		c.Transport = TransportHotAdd
	}
	if d, ok := stringAttr(cfg, "state_dir"); ok {
		c.StateDir = filepath.Clean(d)
	}
	if c.Transport == TransportHotAdd && c.StateDir == "" {
		return nil, fmt.Errorf("state_dir is required to write through HotAdd: %w", errdefs.ErrInvalidArgument)
	}
	c.HotAddProxy, _ = stringAttr(cfg, "hotadd_proxy")
	c.DeviceDir = DefaultDeviceDir
	if d, ok := stringAttr(cfg, "hotadd_device_dir"); ok {
		c.DeviceDir = filepath.Clean(d)
	}
	return c, nil
}

// complete checks what the schema requires, for a value that did not come
// through the host's decoder.
func (c *connConfig) complete() error {
	for name, v := range map[string]string{"url": c.URL, "username": c.Username, "password": c.Password} {
		if v == "" {
			return fmt.Errorf("%s is required: %w", name, errdefs.ErrInvalidArgument)
		}
	}
	return nil
}

// mappedDatastores lists the datastore names of a mapping, sorted, for
// messages.
func mappedDatastores(m map[string]string) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}
