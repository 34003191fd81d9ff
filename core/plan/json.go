package plan

import (
	"encoding/json"
	"fmt"
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
	return json.Marshal(out)
}

// UnmarshalJSON reads a plan MarshalJSON wrote (a server's, for the
// command line to show).
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
