package config

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/hcl/v2"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/sdk"
)

// HardwareMap is a job's hardware_map block: overrides of how each source
// VM's hardware is mapped onto what the job's target builds (core/hwmap
// maps; this only reads and checks what the user wrote).
//
//	hardware_map {
//	  generation = 2               # for every VM of the job
//	  nic_model  = "hyperv-synthetic"
//	  vm "db-01" {                 # for one VM, over the job-wide values
//	    generation = 1
//	    boot_bus   = "ide"
//	  }
//	}
type HardwareMap struct {
	All HardwareOverride
	// VMs are the per-VM overrides, by the VM's entry in vms or its name.
	VMs       map[string]HardwareOverride
	DeclRange hcl.Range
}

// HardwareOverride is what a hardware_map (or one of its vm blocks) sets;
// a zero field leaves the default.
type HardwareOverride struct {
	Generation int    // Hyper-V generation, 1 or 2
	Firmware   string // bios or efi
	SecureBoot *bool
	BootBus    sdk.Bus             // the bus of the boot disk
	SCSIModel  sdk.ControllerModel // the model of every SCSI controller
	NICModel   sdk.NICModel        // the model of every NIC
	// Ranges are where each attribute set is written, by its name, for
	// the messages of a mapping that cannot be built or cannot boot.
	Ranges map[string]hcl.Range
}

// IsZero reports whether the override sets nothing.
func (o HardwareOverride) IsZero() bool {
	return o.Generation == 0 && o.Firmware == "" && o.SecureBoot == nil && o.BootBus == "" && o.SCSIModel == "" && o.NICModel == ""
}

// Where says where an attribute of the override is written, "" when it
// is not.
func (o HardwareOverride) Where(attr string) string {
	if r, ok := o.Ranges[attr]; ok {
		return fmt.Sprintf("%s:%d", r.Filename, r.Start.Line)
	}
	return ""
}

// For is the override of one VM: the job-wide values with those of the
// VM's own block over them. entry is the VM's entry in vms (or its key
// when selected) and name its name.
func (m HardwareMap) For(entry, name string) HardwareOverride {
	out := m.All
	out.Ranges = map[string]hcl.Range{}
	for k, r := range m.All.Ranges {
		out.Ranges[k] = r
	}
	vm, ok := m.VMs[entry]
	if !ok {
		vm, ok = m.VMs[name]
	}
	if !ok {
		return out
	}
	if vm.Generation != 0 {
		out.Generation = vm.Generation
	}
	if vm.Firmware != "" {
		out.Firmware = vm.Firmware
	}
	if vm.SecureBoot != nil {
		out.SecureBoot = vm.SecureBoot
	}
	if vm.BootBus != "" {
		out.BootBus = vm.BootBus
	}
	if vm.SCSIModel != "" {
		out.SCSIModel = vm.SCSIModel
	}
	if vm.NICModel != "" {
		out.NICModel = vm.NICModel
	}
	for k, r := range vm.Ranges {
		out.Ranges[k] = r
	}
	return out
}

var hardwareAttrs = []hcl.AttributeSchema{
	{Name: "generation"},
	{Name: "firmware"},
	{Name: "secure_boot"},
	{Name: "boot_bus"},
	{Name: "scsi_model"},
	{Name: "nic_model"},
}

var (
	hardwareMapSchema = &hcl.BodySchema{Attributes: hardwareAttrs,
		Blocks: []hcl.BlockHeaderSchema{{Type: "vm", LabelNames: []string{"name"}}}}
	hardwareVMSchema = &hcl.BodySchema{Attributes: hardwareAttrs}
)

// hardwareMap reads a hardware_map block and checks it against what the
// job's target declares it builds.
func (l *loader) hardwareMap(j *Job, b *hcl.Block) HardwareMap {
	m := HardwareMap{DeclRange: b.DefRange, VMs: map[string]HardwareOverride{}}
	content, diags := b.Body.Content(hardwareMapSchema)
	l.diags = append(l.diags, diags...)
	m.All = l.hardwareOverride(content.Attributes)
	seen := map[string]hcl.Range{}
	for _, vb := range content.Blocks {
		name := vb.Labels[0]
		if first, dup := seen[name]; dup {
			l.errorf(vb.DefRange, "Duplicate vm block", "hardware_map of job %q already has a vm %q block at %s.", j.Name, name, first)
			continue
		}
		seen[name] = vb.DefRange
		if !j.Selects() && len(j.VMs) > 0 && !slices.Contains(j.VMs, name) {
			l.errorf(vb.LabelRanges[0], "Unknown VM", "hardware_map of job %q names VM %q, which the job does not replicate (its vms are %s).%s",
				j.Name, name, strings.Join(j.VMs, ", "), didYouMeanQuoted(name, j.VMs))
			continue
		}
		c, diags := vb.Body.Content(hardwareVMSchema)
		l.diags = append(l.diags, diags...)
		m.VMs[name] = l.hardwareOverride(c.Attributes)
	}
	l.checkHardwareMap(j, &m)
	return m
}

func (l *loader) hardwareOverride(attrs hcl.Attributes) HardwareOverride {
	o := HardwareOverride{Ranges: map[string]hcl.Range{}}
	oneOf := func(name string, allowed []string, what string) string {
		a, ok := attrs[name]
		if !ok {
			return ""
		}
		s, ok := evalString(a, l.ctx, &l.diags)
		if !ok || s == "" {
			return ""
		}
		if !slices.Contains(allowed, s) {
			l.errorf(a.Expr.Range(), "Invalid "+name, "%s %q is not one of %s.%s", what, s, strings.Join(allowed, ", "), didYouMeanQuoted(s, allowed))
			return ""
		}
		o.Ranges[name] = a.Expr.Range()
		return s
	}
	if a, ok := attrs["generation"]; ok {
		if n, set, ok := evalInt(a, l.ctx, &l.diags); ok && set {
			if n != 1 && n != 2 {
				l.errorf(a.Expr.Range(), "Invalid generation", "A Hyper-V VM is of generation 1 (BIOS) or 2 (UEFI); generation is %d.", n)
			} else {
				o.Generation = n
				o.Ranges["generation"] = a.Expr.Range()
			}
		}
	}
	o.Firmware = oneOf("firmware", []string{sdk.FirmwareBIOS, sdk.FirmwareEFI}, "Firmware")
	if a, ok := attrs["secure_boot"]; ok {
		if v, set, ok := evalValue(a, l.ctx, cty.Bool, &l.diags); ok && set {
			sb := v.True()
			o.SecureBoot = &sb
			o.Ranges["secure_boot"] = a.Expr.Range()
		}
	}
	o.BootBus = sdk.Bus(oneOf("boot_bus", names(sdk.Buses), "Bus"))
	o.SCSIModel = sdk.ControllerModel(oneOf("scsi_model", names(sdk.SCSIModels), "SCSI model"))
	o.NICModel = sdk.NICModel(oneOf("nic_model", names(sdk.NICModels), "NIC model"))
	return o
}

func names[T ~string](xs []T) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = string(x)
	}
	return out
}

// checkHardwareMap reports, at the line that asks, what the job's target
// cannot build or what cannot boot whatever the source VM: a generation
// whose firmware contradicts the firmware asked for, a boot bus the
// firmware does not boot from, a model the target does not build with
// the generation or firmware asked for, Secure Boot on BIOS. What depends
// on the source VM (a generation-2 replica of a BIOS guest) is known only
// when the source is asked: `ferry plan` and the run refuse it.
func (l *loader) checkHardwareMap(j *Job, m *HardwareMap) {
	if j.Target == nil || j.Target.Info == nil {
		return
	}
	hw := j.Target.Info.Hardware
	if hw == nil {
		l.errorf(m.DeclRange, "Target does not map hardware",
			"%s (type %q) does not declare what hardware it builds (a plugin older than protocol 1.8), so job %q's hardware_map cannot apply; remove it or update the plugin.",
			j.Target.Address(), j.Target.Type, j.Name)
		return
	}
	// A VM's override holds the job-wide values too: what is wrong with
	// those is reported once, for the job, not again for each vm block.
	reported := map[string]bool{}
	errorf := func(subject hcl.Range, summary, format string, args ...any) {
		key := fmt.Sprintf("%s:%d:%d:%s", subject.Filename, subject.Start.Line, subject.Start.Column, summary)
		if !reported[key] {
			reported[key] = true
			l.errorf(subject, summary, format, args...)
		}
	}
	check := func(o HardwareOverride, scope string) {
		if o.IsZero() {
			return
		}
		profiles := CandidateProfiles(hw, o)
		if o.Generation != 0 && o.Firmware != "" {
			want := sdk.FirmwareBIOS
			if o.Generation == 2 {
				want = sdk.FirmwareEFI
			}
			if o.Firmware != want {
				errorf(o.Ranges["firmware"], "Replica cannot boot",
					"%s asks for generation %d and firmware %q: a generation-%d Hyper-V VM has %s firmware only.", scope, o.Generation, o.Firmware, o.Generation, want)
				return
			}
		}
		if len(profiles) == 0 {
			attr := "generation"
			if _, ok := o.Ranges[attr]; !ok || o.Generation == 0 {
				attr = "firmware"
			}
			errorf(o.Ranges[attr], "Target cannot build it", "%s asks for %s, but %s (type %q) builds %s.",
				scope, overrideProfile(o), j.Target.Address(), j.Target.Type, profileNames(hw))
			return
		}
		any := func(ok func(p *sdk.HardwareProfile) bool) bool {
			for i := range profiles {
				if ok(&profiles[i]) {
					return true
				}
			}
			return false
		}
		within := "any VM it builds"
		if o.Generation != 0 || o.Firmware != "" {
			within = overrideProfile(o)
		}
		if b := o.BootBus; b != "" && !any(func(p *sdk.HardwareProfile) bool { return p.Boots(b) }) {
			errorf(o.Ranges["boot_bus"], "Replica cannot boot", "%s puts the boot disk on %s, but %s of %s boots from %s only.",
				scope, b, within, j.Target.Address(), bootBuses(profiles))
		}
		if mdl := o.SCSIModel; mdl != "" && !any(func(p *sdk.HardwareProfile) bool { _, ok := p.Controller(sdk.BusSCSI, mdl); return ok }) {
			errorf(o.Ranges["scsi_model"], "Target cannot build it", "%s asks for %s SCSI controllers, which %s of %s does not have.", scope, mdl, within, j.Target.Address())
		}
		if n := o.NICModel; n != "" && !any(func(p *sdk.HardwareProfile) bool { return slices.Contains(p.NICModels, n) }) {
			errorf(o.Ranges["nic_model"], "Target cannot build it", "%s asks for %s NICs, which %s of %s does not have.", scope, n, within, j.Target.Address())
		}
		if o.SecureBoot != nil && *o.SecureBoot && !any(func(p *sdk.HardwareProfile) bool { return p.SecureBoot }) {
			errorf(o.Ranges["secure_boot"], "Replica cannot boot", "%s turns Secure Boot on, but %s of %s has no Secure Boot (it needs UEFI firmware).", scope, within, j.Target.Address())
		}
	}
	check(m.All, fmt.Sprintf("The hardware_map of job %q", j.Name))
	vms := slices.Sorted(maps.Keys(m.VMs))
	for _, name := range vms {
		check(m.For(name, name), fmt.Sprintf("The hardware_map of job %q for VM %q", j.Name, name))
	}
}

// CandidateProfiles are the profiles of hw an override allows: those of
// the generation and firmware it asks for. A target that builds anything
// as given has one profile per firmware with every device.
func CandidateProfiles(hw *sdk.HardwareSupport, o HardwareOverride) []sdk.HardwareProfile {
	var out []sdk.HardwareProfile
	for _, p := range Profiles(hw, o.Generation) {
		if (o.Generation == 0 || p.Generation == o.Generation) && (o.Firmware == "" || p.Firmware == o.Firmware) {
			out = append(out, p)
		}
	}
	return out
}

// Profiles are the profiles of hw; for a target that builds anything as
// given, one per firmware with every device (of generation gen, which
// sets the firmware when it is not 0).
func Profiles(hw *sdk.HardwareSupport, gen int) []sdk.HardwareProfile {
	if hw == nil {
		return nil
	}
	if !hw.AsGiven {
		return hw.Profiles
	}
	var ctrls []sdk.ControllerSupport
	for _, b := range sdk.Buses {
		if b != sdk.BusSCSI {
			ctrls = append(ctrls, sdk.ControllerSupport{Bus: b, Controllers: 4, Units: 64})
			continue
		}
		for _, m := range append([]sdk.ControllerModel{""}, sdk.SCSIModels...) {
			ctrls = append(ctrls, sdk.ControllerSupport{Bus: b, Model: m, Controllers: 4, Units: 64})
		}
	}
	var out []sdk.HardwareProfile
	for _, fw := range []string{sdk.FirmwareEFI, sdk.FirmwareBIOS} {
		g := gen
		if g == 1 && fw == sdk.FirmwareEFI || g == 2 && fw == sdk.FirmwareBIOS {
			continue
		}
		out = append(out, sdk.HardwareProfile{Firmware: fw, Generation: g, SecureBoot: fw == sdk.FirmwareEFI, TPM: true,
			SecureBootTemplates: []string{sdk.SecureBootMicrosoftWindows, sdk.SecureBootMicrosoftUEFICA},
			Controllers:         ctrls, BootBuses: sdk.Buses, NICModels: sdk.NICModels})
	}
	return out
}

func overrideProfile(o HardwareOverride) string {
	switch {
	case o.Generation != 0 && o.Firmware != "":
		return fmt.Sprintf("generation %d (%s)", o.Generation, o.Firmware)
	case o.Generation != 0:
		return fmt.Sprintf("generation %d", o.Generation)
	}
	return o.Firmware + " firmware"
}

func profileNames(hw *sdk.HardwareSupport) string {
	var out []string
	for _, p := range Profiles(hw, 0) {
		out = append(out, p.Name())
	}
	return strings.Join(out, " and ")
}

func bootBuses(ps []sdk.HardwareProfile) string {
	var out []string
	for _, p := range ps {
		for _, b := range p.BootBuses {
			if !slices.Contains(out, string(b)) {
				out = append(out, string(b))
			}
		}
	}
	return strings.Join(out, ", ")
}
