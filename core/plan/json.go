package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/ferry-dr/ferry/core/catalog"
	"github.com/ferry-dr/ferry/core/hwmap"
	"github.com/ferry-dr/ferry/core/retention"
	"github.com/ferry-dr/ferry/sdk"
)

// A plan's JSON is `ferry plan --json`'s, documented in docs/cli.md and
// answered by ferry server's GET /v1/plan: snake_case as ferry's other
// JSON, actions as words, kept when the types here change.

type planJSON struct {
	Job     string       `json:"job"`
	Changes []changeJSON `json:"changes"`
	// Selection is what each selector and exclusion of the job matches;
	// absent for a job that names its VMs.
	Selection []selectedJSON `json:"selection,omitempty"`
	// Proxies is where the job's disks would move; absent without proxies.
	Proxies *proxiesJSON `json:"proxies,omitempty"`
	// Decisions are Plan.VMs, the typed decisions Changes render; absent
	// when the plan has none.
	Decisions *decisionsJSON `json:"decisions,omitempty"`
}

// DecisionsVersion is the version of the decisions' shape in a plan's
// JSON. A change that a reader of the version before would misread (a
// field renamed, a meaning changed) takes the next one; adding a field
// does not. A reader skips the decisions of a version it does not know:
// the plan's changes still say what a run would do.
const DecisionsVersion = 1

type decisionsJSON struct {
	Version int            `json:"version"`
	VMs     []decisionJSON `json:"vms"`
}

type decisionJSON struct {
	VM       string        `json:"vm"`
	Verdict  Verdict       `json:"verdict"`           // create, incremental, skip or fail
	Refusal  Refusal       `json:"refusal,omitempty"` // why it fails
	Replica  string        `json:"replica,omitempty"`
	Adopt    bool          `json:"adopt,omitempty"`
	Map      bool          `json:"map,omitempty"`
	Retire   string        `json:"retire,omitempty"`
	TakeOver bool          `json:"take_over,omitempty"`
	Disks    []diskJSON    `json:"disks,omitempty"`
	Drop     []droppedJSON `json:"drop,omitempty"`
	// Hardware is the replica's hardware against the source's; absent
	// when the source could not describe the VM or the target does not
	// map hardware.
	Hardware *hardwareJSON `json:"hardware,omitempty"`
}

// hardwareJSON is a VM's hardware mapping (package hwmap).
type hardwareJSON struct {
	// Profile is the kind of VM the target builds ("generation 1 (bios)").
	Profile string `json:"profile,omitempty"`
	// Changes are every way the replica differs from the source.
	Changes []hwmap.Change `json:"changes"`
	// Refused says why the mapping cannot be built or cannot boot.
	Refused string `json:"refused,omitempty"`
	// Replica is the replica's hardware as mapped.
	Replica *sdk.VM `json:"replica,omitempty"`
	// Kept are the ways a replica that exists differs from the mapping:
	// each goes from what it keeps to what the mapping gives.
	Kept []hwmap.Change `json:"kept,omitempty"`
}

type diskJSON struct {
	Index    int          `json:"index"`
	Capacity int64        `json:"capacity"`
	Skip     bool         `json:"skip,omitempty"`
	Mode     catalog.Mode `json:"mode,omitempty"`
	Since    string       `json:"since,omitempty"`
	Why      string       `json:"why,omitempty"`
	Planned  catalog.Mode `json:"planned,omitempty"`
	New      bool         `json:"new,omitempty"`
	Was      int64        `json:"was,omitempty"`
}

// droppedJSON is a restore point retention decides about.
type droppedJSON struct {
	Point   string    `json:"point"`
	Created time.Time `json:"created"`
	Pinned  bool      `json:"pinned,omitempty"`
	Keep    bool      `json:"keep,omitempty"`
	Reason  string    `json:"reason,omitempty"`
}

func decisionsTo(vms []Decision) *decisionsJSON {
	if len(vms) == 0 {
		return nil
	}
	out := &decisionsJSON{Version: DecisionsVersion, VMs: make([]decisionJSON, 0, len(vms))}
	for _, d := range vms {
		dj := decisionJSON{VM: d.VM, Verdict: d.Verdict, Refusal: d.Refusal, Replica: d.ReplicaName, Adopt: d.Adopt, Map: d.Map, Retire: d.Retire, TakeOver: d.TakeOver}
		for _, k := range d.Disks {
			dj.Disks = append(dj.Disks, diskJSON(k))
		}
		for _, r := range d.Drop {
			dj.Drop = append(dj.Drop, droppedJSON{Point: r.Point.ID, Created: r.Point.Created, Pinned: r.Point.Pinned, Keep: r.Keep, Reason: r.Reason})
		}
		switch h := d.Hardware; {
		case d.HardwareErr != nil:
			dj.Hardware = &hardwareJSON{Changes: []hwmap.Change{}, Refused: d.HardwareErr.Error()}
		case h != nil && h.Mapped:
			vm := h.VM
			dj.Hardware = &hardwareJSON{Profile: h.Profile, Changes: append([]hwmap.Change{}, h.Changes...), Replica: &vm, Kept: d.HardwareKept}
		}
		out.VMs = append(out.VMs, dj)
	}
	return out
}

func decisionsFrom(in *decisionsJSON) []Decision {
	if in == nil || in.Version != DecisionsVersion {
		return nil
	}
	var out []Decision
	for _, dj := range in.VMs {
		d := Decision{VM: dj.VM, Verdict: dj.Verdict, Refusal: dj.Refusal, ReplicaName: dj.Replica, Adopt: dj.Adopt, Map: dj.Map, Retire: dj.Retire, TakeOver: dj.TakeOver}
		if h := dj.Hardware; h != nil {
			switch {
			case h.Refused != "":
				d.HardwareErr = errors.New(h.Refused)
			default:
				d.Hardware = &hwmap.Result{Profile: h.Profile, Changes: h.Changes, Mapped: true}
				d.HardwareKept = h.Kept
				if h.Replica != nil {
					d.Hardware.VM = *h.Replica
				}
			}
		}
		for _, k := range dj.Disks {
			d.Disks = append(d.Disks, DiskDecision(k))
		}
		for _, r := range dj.Drop {
			d.Drop = append(d.Drop, retention.Decision{Point: retention.Point{ID: r.Point, Created: r.Created, Pinned: r.Pinned}, Keep: r.Keep, Reason: r.Reason})
		}
		out = append(out, d)
	}
	return out
}

type changeJSON struct {
	Action string `json:"action"`         // create, update, delete, warn or keep
	VM     string `json:"vm,omitempty"`   // absent for the job as a whole
	Disk   *int   `json:"disk,omitempty"` // the disk's index; absent for a VM or the job
	What   string `json:"what"`
}

type selectedJSON struct {
	Selector string   `json:"selector"`
	Exclude  bool     `json:"exclude,omitempty"`
	VMs      []string `json:"vms"`
	Why      string   `json:"why,omitempty"` // for a selector that matches nothing
}

type proxiesJSON struct {
	Source      string   `json:"source,omitempty"`
	SourceWhy   string   `json:"source_why,omitempty"`
	Target      string   `json:"target,omitempty"`
	TargetWhy   string   `json:"target_why,omitempty"`
	Compression string   `json:"compression,omitempty"`
	Skipped     []string `json:"skipped,omitempty"` // the proxies that cannot be used now, and why
	Error       string   `json:"error,omitempty"`   // why no proxy can take the job's disks
}

// actionNames are the words of the actions in JSON.
var actionNames = map[Action]string{
	Create: "create", Update: "update", Delete: "delete", Warn: "warn", Keep: "keep",
}

// MarshalJSON writes the plan as `ferry plan --json` prints it.
func (p Plan) MarshalJSON() ([]byte, error) {
	out := planJSON{Job: p.Job, Changes: []changeJSON{}}
	for _, c := range p.Changes {
		cj := changeJSON{Action: actionNames[c.Action], VM: c.VM, What: c.What}
		if c.Disk >= 0 {
			d := c.Disk
			cj.Disk = &d
		}
		out.Changes = append(out.Changes, cj)
	}
	for _, s := range p.Selection {
		vms := s.VMs
		if vms == nil {
			vms = []string{}
		}
		out.Selection = append(out.Selection, selectedJSON{Selector: s.Selector, Exclude: s.Exclude, VMs: vms, Why: s.Why})
	}
	if x := p.Proxies; x != nil {
		out.Proxies = &proxiesJSON{Source: x.Source, SourceWhy: x.SourceWhy, Target: x.Target, TargetWhy: x.TargetWhy,
			Compression: x.Compression, Skipped: x.Skipped, Error: x.Error}
	}
	out.Decisions = decisionsTo(p.VMs)
	return json.Marshal(out)
}

// UnmarshalJSON reads a plan MarshalJSON wrote (a server's, for the
// command line to show), with its decisions when their version is
// DecisionsVersion (what a session would know of the facts behind them
// is not in the JSON).
func (p *Plan) UnmarshalJSON(b []byte) error {
	var in planJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	out := Plan{Job: in.Job}
	for _, c := range in.Changes {
		a, ok := actionOf(c.Action)
		if !ok {
			return fmt.Errorf("plan of job %q: no action %q", in.Job, c.Action)
		}
		disk := -1
		if c.Disk != nil {
			disk = *c.Disk
		}
		out.Changes = append(out.Changes, Change{Action: a, VM: c.VM, Disk: disk, What: c.What})
	}
	for _, s := range in.Selection {
		out.Selection = append(out.Selection, Selected(s))
	}
	if x := in.Proxies; x != nil {
		out.Proxies = &Proxies{Source: x.Source, SourceWhy: x.SourceWhy, Target: x.Target, TargetWhy: x.TargetWhy,
			Compression: x.Compression, Skipped: x.Skipped, Error: x.Error}
	}
	out.VMs = decisionsFrom(in.Decisions)
	*p = out
	return nil
}

func actionOf(word string) (Action, bool) {
	for a, w := range actionNames {
		if w == word {
			return a, true
		}
	}
	return "", false
}
