package config

import (
	"bytes"
	"io"
	"maps"
	"net/netip"
	"time"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/scheduler"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/schema"
)

// Config is one configuration: everything declared in the *.hcl files of a
// folder. After a Load with errors it holds what could be decoded and must
// not be acted on.
type Config struct {
	// Dir is the configuration folder: an absolute path after Load, as
	// given to LoadFiles. Values such as a plugin's path attribute are kept
	// as written; the host resolves relative ones against Dir.
	Dir string
	// Files are the parsed files by the name diagnostics use, for
	// rendering diagnostics with source snippets (see WriteDiagnostics).
	Files map[string]*hcl.File

	// Sources, Targets and Repositories hold the plugin blocks of each kind
	// by "type.name", such as "vsphere.prod".
	Sources      map[string]*PluginBlock
	Targets      map[string]*PluginBlock
	Repositories map[string]*PluginBlock
	Proxies      map[string]*Proxy // by name
	Jobs         map[string]*Job   // by name
	// TrafficRules are the traffic_rule blocks without problems, in the
	// order of the files and of the blocks in them.
	TrafficRules []*TrafficRule
	// Webhooks are the webhook blocks without problems, in the order of
	// the files and of the blocks in them.
	Webhooks []*Webhook
	// FailoverPlans are the failover_plan blocks without problems, by
	// name.
	FailoverPlans map[string]*FailoverPlan

	// sensitive are the source ranges of the values of sensitive
	// attributes, masked when diagnostics are rendered.
	sensitive []hcl.Range
}

// WriteDiagnostics renders diags with source snippets from c's files, as
// wide as width columns, with terminal colours when color is set. The
// values of sensitive attributes are masked in the snippets: a snippet
// may show a password's line, never the password.
func (c *Config) WriteDiagnostics(w io.Writer, diags hcl.Diagnostics, width uint, color bool) error {
	return hcl.NewDiagnosticTextWriter(w, c.maskedFiles(), width, color).WriteDiagnostics(diags)
}

// maskedFiles returns c.Files with the source of every sensitive value
// overwritten by asterisks, byte for byte (line breaks kept), so that the
// ranges of diagnostics still fit.
func (c *Config) maskedFiles() map[string]*hcl.File {
	if len(c.sensitive) == 0 {
		return c.Files
	}
	out := maps.Clone(c.Files)
	for _, r := range c.sensitive {
		f := out[r.Filename]
		if f == nil || r.Start.Byte < 0 || r.End.Byte > len(f.Bytes) || r.Start.Byte > r.End.Byte {
			continue
		}
		if f == c.Files[r.Filename] {
			f = &hcl.File{Body: f.Body, Bytes: bytes.Clone(f.Bytes), Nav: f.Nav}
			out[r.Filename] = f
		}
		for i := r.Start.Byte; i < r.End.Byte; i++ {
			if b := f.Bytes[i]; b != '\n' && b != '\r' {
				f.Bytes[i] = '*'
			}
		}
	}
	return out
}

// PluginBlock is a source, target or repository block: its labels name the
// plugin type that serves it and the block, and its body belongs to the
// plugin.
type PluginBlock struct {
	Kind sdk.Kind
	Type string // the first label: the component type a plugin serves
	Name string // the second label
	// Config is the body decoded against Schema. It is cty.NilVal when the
	// type is unknown or the body did not decode.
	Config cty.Value
	// Schema is the schema the plugin declared; nil when no plugin serves
	// the type. It says which attributes are sensitive.
	Schema *schema.Block
	// Info is what the plugin declares of the type besides its schema
	// (capabilities, limits); nil when no plugin serves the type or the
	// Schemas given to Load cannot say (see ComponentInfos).
	Info *sdk.ComponentInfo
	// Body is the block's original body, for mapping a plugin's
	// diagnostics back to the source (see PathRange).
	Body      hcl.Body
	DeclRange hcl.Range // the block header
	// Site is the site the block's storage is at (its site attribute,
	// which ferry reads and the plugin never sees); "" when not given.
	// Disk tasks prefer proxies of the same site.
	Site string
}

// Address returns the reference a job uses for the block, such as
// source.vsphere.prod.
func (b *PluginBlock) Address() string { return string(b.Kind) + "." + b.Type + "." + b.Name }

// PathRange returns the source range of the attribute or nested block that
// path names in the block's body, or of the part of it that exists; the
// block header when path is empty or nothing of it exists.
func (b *PluginBlock) PathRange(path cty.Path) hcl.Range {
	return pathRangeOr(b.Body, path, b.DeclRange)
}

// Diagnostics converts diagnostics a plugin reported about this block's
// configuration into HCL diagnostics pointing into the user's source.
func (b *PluginBlock) Diagnostics(ds schema.Diagnostics) hcl.Diagnostics {
	return ConvertDiagnostics(b.Body, b.DeclRange, ds)
}

// Proxy is a proxy block: a host running `ferry proxy`.
type Proxy struct {
	Name     string
	Address  string // host:port as written
	Host     string
	Port     uint16
	Site     string // "" when not given
	MaxTasks int    // task slots; DefaultProxyMaxTasks when not given

	DeclRange hcl.Range
}

// DefaultProxyMaxTasks is a proxy's number of task slots when its block does
// not say.
const DefaultProxyMaxTasks = 4

// Job is a job block: which VMs to replicate from where to where, when,
// and how.
type Job struct {
	Name   string
	Source *PluginBlock
	Target *PluginBlock
	// Repository keeps the replica metadata; nil when the job names none
	// and the host's default repository applies.
	Repository *PluginBlock
	// VMs are the VMs the job names one by one in vms, as written (an id,
	// inventory path or name, which the source resolves), in order.
	VMs []string
	// Selectors are the folder and tag selectors of vms, in order: the job
	// also replicates every VM they pick at the time of each run.
	Selectors []Selector
	// Exclude are the entries of exclude: VMs and selectors whose VMs the
	// job never replicates, even when vms names or selects them.
	Exclude []Selector
	// Proxies are the proxies the job may use, in the order given; empty
	// when the job leaves the choice to automatic selection.
	Proxies []*Proxy
	// Schedule says when the job runs; the zero Schedule when it runs only
	// on demand.
	Schedule scheduler.Schedule
	// RPO is the recovery point objective: the oldest the newest restore
	// point of each VM may be before ferry server raises an alarm; 0 when
	// the job declares none.
	RPO           time.Duration
	Quiesce       bool
	ReplicaSuffix string
	// CopyIndependentDisks copies the disks VM snapshots do not capture
	// (independent modes) although they change while they are read; by
	// default such disks are skipped with a warning.
	CopyIndependentDisks bool
	Retention            Retention
	NetworkMap           []NetworkMapping
	ReIP                 []ReIPRule
	// ReplicaMappings name VMs the target has as the replicas of VMs of
	// the job (replica_mapping blocks).
	ReplicaMappings []ReplicaMapping
	Transfer        Transfer
	Retry           Retry
	// HardwareMap overrides how the source VMs' hardware is mapped onto
	// what the target builds; the zero value maps by the defaults.
	HardwareMap HardwareMap

	// Body is the job's body, for pointing at its parts in later
	// diagnostics (see PathRange).
	Body      hcl.Body
	DeclRange hcl.Range
	// vmRanges are where each of VMs is written.
	vmRanges []hcl.Range
}

// Selects reports whether the job picks VMs by folder or tag or excludes
// some: its VMs are then known only by asking the source at each run.
func (j *Job) Selects() bool { return len(j.Selectors) > 0 || len(j.Exclude) > 0 }

// DefaultReplicaSuffix is appended to a VM's name to name its replica when
// the job does not say otherwise.
const DefaultReplicaSuffix = "_replica"

// ReplicaName names the replica of the VM that entry (a name, an inventory
// path or an id in vms, or a selected VM's key) stands for: the VM of the
// target a replica_mapping names for it, else the VM's own name, as the
// source describes it, with the job's suffix. The entry is the fallback
// for a source that reports no name.
func (j *Job) ReplicaName(entry, vmName string) string {
	if name, ok := j.Mapped(entry); ok {
		return name // a VM the target has, named as it is
	}
	if vmName == "" {
		vmName = entry
	}
	return vmName + j.ReplicaSuffix
}

// PathRange returns the source range of the part of the job that path
// names, such as vms[1] or re_ip[0].gateway, or of the part of it that
// exists; the block header when path is empty or nothing of it exists.
func (j *Job) PathRange(path cty.Path) hcl.Range {
	return pathRangeOr(j.Body, path, j.DeclRange)
}

// Retention says how many restore points a replica keeps.
type Retention struct {
	RestorePoints int
	DeclRange     hcl.Range // zero when the job has no retention block
	Range         hcl.Range // of the restore_points value; zero when not given
}

// DefaultRestorePoints is the retention when a job does not say.
const DefaultRestorePoints = 7

// Retry says how a session tries again the VMs that failed: after its
// first pass over the job's VMs, it waits Wait and tries again those whose
// error may go away by waiting, until each was tried Attempts times. What
// counts as such an error is the engine's to decide (engine.Retryable).
type Retry struct {
	// Attempts is how many times a session tries a VM, the first try
	// included: 1 never tries again. The loader's default is
	// DefaultRetryAttempts; the zero Retry (a Job built in code) tries
	// once.
	Attempts  int
	Wait      time.Duration
	DeclRange hcl.Range // zero when the job has no retry block
}

// The retry settings of a job that does not say: Veeam's defaults.
const (
	DefaultRetryAttempts = 3
	DefaultRetryWait     = 10 * time.Minute
)

// NetworkMapping connects replicas to network To where the source VM is on
// network From.
type NetworkMapping struct {
	From, To  string
	DeclRange hcl.Range
}

// ReIPRule rewrites a replica's addresses from FromSubnet to ToSubnet at
// failover, keeping the host part. Both prefixes have the same length and
// family, and their host bits are zero.
type ReIPRule struct {
	FromSubnet netip.Prefix
	ToSubnet   netip.Prefix
	Gateway    netip.Addr // inside ToSubnet; the zero Addr when not given
	DNS        []netip.Addr
	DeclRange  hcl.Range
}

// Compression is how disk data is compressed on the wire.
type Compression string

// The compression settings. Auto lets the data mover choose by where the
// data goes: none on the same host, s2 on a LAN, zstd across a WAN.
const (
	CompressionAuto Compression = "auto"
	CompressionNone Compression = "none"
	CompressionS2   Compression = "s2"
	CompressionZstd Compression = "zstd"
)

var compressions = []Compression{CompressionNone, CompressionS2, CompressionZstd, CompressionAuto}

// Transfer tunes how a job moves disk data.
type Transfer struct {
	Compression Compression // CompressionAuto when not given
	// Throttle caps the job's transfer rate in bytes per second; 0 for no
	// cap.
	Throttle int64
	// MaxTasks caps the job's disks copied at once; 0 leaves it to the
	// proxies' task slots.
	MaxTasks int
	// BlockSize is the size of the blocks compared and sent, in bytes: a
	// power of two from 4 KiB to 1 MiB; 0 for the data mover's default.
	BlockSize int64
	DeclRange hcl.Range // zero when the job has no transfer block
}
