package hwmap

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/ferry-dr/ferry/config"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// Change is one way the replica's hardware differs from its source's.
type Change struct {
	// Item names what changes: "firmware", "generation", "secure boot",
	// "secure boot template", "tpm", "disk 0", "nic 1".
	Item string `json:"item"`
	From string `json:"from"`
	To   string `json:"to"`
	// Reason says why, in a sentence for the user.
	Reason string `json:"reason"`
}

// String renders the change for a plan: "disk 0: scsi0:0 (pvscsi) ->
// ide0:0 (generation 1 boots from IDE only)".
func (c Change) String() string {
	return fmt.Sprintf("%s: %s -> %s (%s)", c.Item, c.From, c.To, c.Reason)
}

// Result is a mapping: the replica's description and what changed.
type Result struct {
	// VM is the source's description with the replica's hardware: what
	// the target is asked to build.
	VM sdk.VM
	// Profile names the kind of VM the target builds ("generation 1
	// (bios)", "efi"); empty when the target does not map hardware.
	Profile string
	Changes []Change
	// Mapped is false when the target declares nothing it builds (a
	// plugin older than protocol 1.8): VM is the source's, unmapped.
	Mapped bool
}

// Refusal is a mapping that cannot be built or cannot boot. It is of
// class errdefs.ErrFailedPrecondition.
type Refusal struct {
	VM     string
	Reason string
}

func (r *Refusal) Error() string {
	return fmt.Sprintf("the replica of VM %q cannot boot as mapped: %s", r.VM, r.Reason)
}

func (r *Refusal) Unwrap() error { return errdefs.ErrFailedPrecondition }

// Map maps src onto what hw builds, with o over the defaults:
//   - the firmware stays the source's: BIOS becomes generation 1 on
//     Hyper-V, EFI generation 2, and a generation becomes nothing on a
//     target without generations; an override asking for the other
//     firmware is refused, since the guest's boot loader is for its own;
//   - Secure Boot stays when the target builds it (on Hyper-V with the
//     template the guest family needs), TPM likewise; each is dropped
//     with a reason otherwise;
//   - the boot disk goes on a bus the firmware boots from, the others on
//     the bus nearest the source's that the target builds (IDE and SATA
//     before SCSI), keeping positions where it can;
//   - a SCSI model the target does not build becomes one the guest family
//     has a driver for (Windows: LSI Logic SAS; Linux: pvscsi or Hyper-V's
//     synthetic adapter; others: LSI Logic), and so does a NIC model
//     (Windows: e1000e; Linux: vmxnet3; both: Hyper-V's synthetic NIC).
//
// A nil hw maps nothing (Result.Mapped false).
func Map(src sdk.VM, hw *sdk.HardwareSupport, o config.HardwareOverride) (Result, error) {
	vm := clone(src)
	sdk.NormalizeHardware(&vm)
	if hw == nil {
		return Result{VM: vm}, nil
	}
	m := &mapper{src: clone(src), vm: vm, o: o, family: vm.Hardware.GuestFamily, asGiven: hw.AsGiven}
	sdk.NormalizeHardware(&m.src)
	if err := m.profile(hw); err != nil {
		return Result{}, err
	}
	m.firmware()
	if err := m.disks(); err != nil {
		return Result{}, err
	}
	if err := m.nics(); err != nil {
		return Result{}, err
	}
	syncAttributes(&m.vm)
	return Result{VM: m.vm, Profile: m.p.Name(), Changes: m.changes, Mapped: true}, nil
}

type mapper struct {
	src, vm sdk.VM
	o       config.HardwareOverride
	family  sdk.GuestFamily
	asGiven bool // the target builds what it is given: only overrides change
	p       *sdk.HardwareProfile
	changes []Change
}

func (m *mapper) refuse(format string, args ...any) error {
	return &Refusal{VM: m.src.Name, Reason: fmt.Sprintf(format, args...)}
}

func (m *mapper) change(item, from, to, reason string) {
	m.changes = append(m.changes, Change{Item: item, From: from, To: to, Reason: reason})
}

// asked says where the override sets attr, for reasons.
func (m *mapper) asked(attr string) string {
	if w := m.o.Where(attr); w != "" {
		return fmt.Sprintf("hardware_map sets %s at %s", attr, w)
	}
	return "hardware_map sets " + attr
}

// profile picks the kind of VM the target builds: the one the override
// asks for, else the first of the source's firmware (of the source's
// generation when there is a choice).
func (m *mapper) profile(hw *sdk.HardwareSupport) error {
	fw, gen := m.src.Hardware.Firmware, m.src.Hardware.Generation
	var cands []sdk.HardwareProfile
	if hw.AsGiven && m.o.Generation == 0 {
		// As given: the source's generation stays unless one is asked for.
		for _, g := range []int{gen, 0} {
			for _, p := range config.Profiles(hw, g) {
				if m.o.Firmware == "" || p.Firmware == m.o.Firmware {
					cands = append(cands, p)
				}
			}
			if len(cands) > 0 {
				break
			}
		}
	} else {
		cands = config.CandidateProfiles(hw, m.o)
	}
	if len(cands) == 0 {
		if m.o.Generation != 0 || m.o.Firmware != "" {
			return m.refuse("the target builds no %s VM", describeOverride(m.o))
		}
		return m.refuse("the target builds no VM with %s firmware", fw)
	}
	var pick *sdk.HardwareProfile
	for i := range cands {
		p := &cands[i]
		if p.Firmware != fw {
			continue
		}
		if pick == nil || (p.Generation == gen && pick.Generation != gen) {
			pick = p
		}
	}
	if pick == nil {
		p := cands[0]
		attr := "firmware"
		if m.o.Generation != 0 {
			attr = "generation"
		}
		if m.o.Generation == 0 && m.o.Firmware == "" {
			return m.refuse("the guest boots with %s firmware, which the target does not build", fw)
		}
		return m.refuse("%s asks for %s, but the guest boots with %s firmware: %s firmware finds no boot loader on its disk (convert the guest first, for example with mbr2gpt, or leave %s out)",
			m.asked(attr), p.Name(), fw, p.Firmware, attr)
	}
	m.p = pick
	return nil
}

func describeOverride(o config.HardwareOverride) string {
	var parts []string
	if o.Generation != 0 {
		parts = append(parts, "generation "+strconv.Itoa(o.Generation))
	}
	if o.Firmware != "" {
		parts = append(parts, o.Firmware)
	}
	return strings.Join(parts, " ")
}

// firmware sets the generation, Secure Boot and its template, and TPM.
func (m *mapper) firmware() {
	p, src, hw := m.p, m.src.Hardware, &m.vm.Hardware
	hw.Firmware, m.vm.Firmware = p.Firmware, p.Firmware
	if p.Generation != src.Generation {
		from, to := genName(src.Generation), genName(p.Generation)
		var why string
		switch {
		case m.o.Generation != 0 && m.o.Generation == p.Generation && p.Generation != 0:
			why = m.asked("generation")
		case p.Generation == 1:
			why = "the guest boots with BIOS, which Hyper-V gives generation 1 VMs only"
		case p.Generation == 2:
			why = "the guest boots with UEFI, which Hyper-V gives generation 2 VMs only"
		default:
			why = fmt.Sprintf("the target has no generations; the VM keeps its %s firmware", p.Firmware)
		}
		m.change("generation", from, to, why)
		hw.Generation = p.Generation
	}
	sb := src.SecureBoot
	sbWhy := ""
	if m.o.SecureBoot != nil && *m.o.SecureBoot != sb {
		sb, sbWhy = *m.o.SecureBoot, m.asked("secure_boot")
	}
	if sb && !p.SecureBoot {
		sb, sbWhy = false, fmt.Sprintf("the target builds no Secure Boot for %s VMs", p.Name())
	}
	if sb != src.SecureBoot {
		m.change("secure boot", onOff(src.SecureBoot), onOff(sb), sbWhy)
	}
	hw.SecureBoot = sb
	tmpl := ""
	if sb && len(p.SecureBootTemplates) > 0 {
		tmpl = src.SecureBootTemplate
		if !slices.Contains(p.SecureBootTemplates, tmpl) {
			tmpl = sdk.SecureBootMicrosoftUEFICA
			if m.family == sdk.GuestWindows {
				tmpl = sdk.SecureBootMicrosoftWindows
			}
			if !slices.Contains(p.SecureBootTemplates, tmpl) {
				tmpl = p.SecureBootTemplates[0]
			}
		}
	}
	if sb && tmpl != src.SecureBootTemplate {
		var why string
		switch {
		case tmpl == "":
			why = "the target's firmware has one set of Secure Boot keys, which trusts both Windows and the Microsoft UEFI CA"
		case tmpl == sdk.SecureBootMicrosoftWindows:
			why = "a Windows guest boots with the Microsoft Windows template"
		default:
			why = "a guest other than Windows boots a loader signed by the Microsoft UEFI CA (Linux's shim)"
		}
		m.change("secure boot template", orNone(src.SecureBootTemplate), orNone(tmpl), why)
	}
	hw.SecureBootTemplate = tmpl
	hw.TPM = src.TPM && p.TPM
	if src.TPM && !p.TPM {
		m.change("tpm", "present", "none", fmt.Sprintf("the target builds no TPM for %s VMs; a guest that seals secrets to it (BitLocker) will ask for its recovery key", p.Name()))
	}
}

func genName(g int) string {
	if g == 0 {
		return "none"
	}
	return strconv.Itoa(g)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// busPreference is the order of buses a disk of bus moves to when the
// target lacks it: the nearest in what the guest needs a driver for.
var busPreference = map[sdk.Bus][]sdk.Bus{
	sdk.BusIDE:  {sdk.BusIDE, sdk.BusSATA, sdk.BusSCSI, sdk.BusNVMe},
	sdk.BusSATA: {sdk.BusSATA, sdk.BusIDE, sdk.BusSCSI, sdk.BusNVMe},
	sdk.BusSCSI: {sdk.BusSCSI, sdk.BusSATA, sdk.BusNVMe, sdk.BusIDE},
	sdk.BusNVMe: {sdk.BusNVMe, sdk.BusSCSI, sdk.BusSATA, sdk.BusIDE},
	"":          {sdk.BusSCSI, sdk.BusSATA, sdk.BusNVMe, sdk.BusIDE},
}

// scsiPreference is the SCSI model a guest family has a driver for, best
// first, when the target does not build the source's.
var scsiPreference = map[sdk.GuestFamily][]sdk.ControllerModel{
	sdk.GuestWindows: {sdk.ModelHyperVSCSI, sdk.ModelLSILogicSAS, sdk.ModelLSILogic, sdk.ModelPVSCSI, sdk.ModelBusLogic},
	sdk.GuestLinux:   {sdk.ModelHyperVSCSI, sdk.ModelPVSCSI, sdk.ModelLSILogic, sdk.ModelLSILogicSAS, sdk.ModelBusLogic},
	sdk.GuestOther:   {sdk.ModelHyperVSCSI, sdk.ModelLSILogic, sdk.ModelLSILogicSAS, sdk.ModelPVSCSI, sdk.ModelBusLogic},
}

// nicPreference is the NIC model a guest family has a driver for, best
// first, when the target does not build the source's.
var nicPreference = map[sdk.GuestFamily][]sdk.NICModel{
	sdk.GuestWindows: {sdk.NICHyperVSynthetic, sdk.NICE1000e, sdk.NICE1000, sdk.NICVmxnet3, sdk.NICHyperVLegacy, sdk.NICVmxnet2, sdk.NICPCNet32},
	sdk.GuestLinux:   {sdk.NICHyperVSynthetic, sdk.NICVmxnet3, sdk.NICE1000e, sdk.NICE1000, sdk.NICHyperVLegacy, sdk.NICVmxnet2, sdk.NICPCNet32},
	sdk.GuestOther:   {sdk.NICHyperVSynthetic, sdk.NICE1000, sdk.NICE1000e, sdk.NICVmxnet3, sdk.NICHyperVLegacy, sdk.NICPCNet32, sdk.NICVmxnet2},
}

func familyOf(f sdk.GuestFamily) sdk.GuestFamily {
	if f == "" {
		return sdk.GuestOther
	}
	return f
}

func familyName(f sdk.GuestFamily) string {
	switch f {
	case sdk.GuestWindows:
		return "Windows"
	case sdk.GuestLinux:
		return "Linux"
	}
	return "its"
}

// slots tracks which controllers and units of the replica are taken, and
// each controller's model.
type slots struct {
	p     *sdk.HardwareProfile
	model map[string]sdk.ControllerModel // "bus:number" -> model
	used  map[string]bool                // "bus:number:unit"
}

func (s *slots) free(bus sdk.Bus, model sdk.ControllerModel, n, u int) bool {
	cs, ok := s.p.Controller(bus, model)
	if !ok || n < 0 || u < 0 || n >= cs.Controllers || u >= cs.Units || slices.Contains(cs.Reserved, u) {
		return false
	}
	key := fmt.Sprintf("%s:%d", bus, n)
	if have, ok := s.model[key]; ok && have != model {
		return false
	}
	return !s.used[fmt.Sprintf("%s:%d", key, u)]
}

func (s *slots) take(bus sdk.Bus, model sdk.ControllerModel, n, u int) {
	key := fmt.Sprintf("%s:%d", bus, n)
	s.model[key] = model
	s.used[fmt.Sprintf("%s:%d", key, u)] = true
}

// place finds a slot on bus: the wanted one when free, else the first
// free unit of the wanted controller, else of any controller.
func (s *slots) place(bus sdk.Bus, model sdk.ControllerModel, wantN, wantU int) (int, int, bool) {
	if s.free(bus, model, wantN, wantU) {
		return wantN, wantU, true
	}
	cs, ok := s.p.Controller(bus, model)
	if !ok {
		return 0, 0, false
	}
	order := []int{wantN}
	for n := 0; n < cs.Controllers; n++ {
		if n != wantN {
			order = append(order, n)
		}
	}
	for _, n := range order {
		for u := 0; u < cs.Units; u++ {
			if s.free(bus, model, n, u) {
				return n, u, true
			}
		}
	}
	return 0, 0, false
}

// disks places every disk, the boot disk first.
func (m *mapper) disks() error {
	s := &slots{p: m.p, model: map[string]sdk.ControllerModel{}, used: map[string]bool{}}
	boot := m.src.BootDiskIndex()
	order := make([]int, 0, len(m.src.Disks))
	if boot >= 0 {
		order = append(order, boot)
	}
	for i := range m.src.Disks {
		if i != boot {
			order = append(order, i)
		}
	}
	for _, i := range order {
		if err := m.disk(s, i, i == boot); err != nil {
			return err
		}
	}
	return nil
}

func (m *mapper) disk(s *slots, i int, boot bool) error {
	sd, p := m.src.Disks[i], m.p
	if m.asGiven && sd.Bus == "" && !(boot && m.o.BootBus != "") {
		return nil // nothing to build it on but what the target picks itself
	}
	buses := busPreference[sd.Bus]
	if buses == nil {
		buses = busPreference[""]
	}
	if boot && m.o.BootBus != "" {
		if !p.Boots(m.o.BootBus) {
			return m.refuse("%s puts the boot disk on %s, but a %s VM of the target boots from %s only", m.asked("boot_bus"), m.o.BootBus, p.Name(), busList(p.BootBuses))
		}
		buses = []sdk.Bus{m.o.BootBus}
	}
	item := fmt.Sprintf("disk %d", i)
	for _, bus := range buses {
		if boot && !p.Boots(bus) {
			continue
		}
		model, modelWhy, err := m.scsiModel(bus, sd)
		if err != nil {
			return err
		}
		if _, ok := p.Controller(bus, model); !ok {
			continue
		}
		wantN, wantU := sd.ControllerNumber, sd.Unit
		if bus != sd.Bus {
			wantN, wantU = 0, 0
		}
		n, u, ok := s.place(bus, model, wantN, wantU)
		if !ok {
			continue
		}
		s.take(bus, model, n, u)
		d := &m.vm.Disks[i]
		d.Bus, d.ControllerModel, d.ControllerNumber, d.Unit = bus, model, n, u
		d.Controller = sdk.ControllerPosition(bus, n, u)
		if d.Bus == sd.Bus && d.ControllerModel == sd.ControllerModel && d.ControllerNumber == sd.ControllerNumber && d.Unit == sd.Unit && sd.Bus != "" {
			return nil
		}
		var whys []string
		switch {
		case sd.Bus == "":
			whys = append(whys, "the source does not say where the disk hangs")
		case boot && m.o.BootBus == bus && bus != sd.Bus:
			whys = append(whys, m.asked("boot_bus"))
		case boot && bus != sd.Bus && !p.Boots(sd.Bus):
			whys = append(whys, fmt.Sprintf("a %s VM boots from %s only", p.Name(), busList(p.BootBuses)))
		case bus != sd.Bus:
			if _, has := p.Controller(sd.Bus, sd.ControllerModel); has || (sd.Bus == sdk.BusSCSI && hasBus(p, sdk.BusSCSI)) {
				whys = append(whys, fmt.Sprintf("the %s controllers of a %s VM are full", sd.Bus, p.Name()))
			} else {
				whys = append(whys, fmt.Sprintf("a %s VM of the target has no %s controller", p.Name(), sd.Bus))
			}
		}
		if model != sd.ControllerModel && modelWhy != "" && (bus == sd.Bus || bus == sdk.BusSCSI) {
			whys = append(whys, modelWhy)
		}
		if bus == sd.Bus && (n != sd.ControllerNumber || u != sd.Unit) {
			whys = append(whys, fmt.Sprintf("position %s is taken or beyond what a %s VM of the target has", sd.Controller, p.Name()))
		}
		why := strings.Join(whys, "; ")
		m.change(item, sd.Slot(), d.Slot(), why)
		return nil
	}
	if boot {
		return m.refuse("the boot disk (disk %d) fits on no bus a %s VM of the target boots from (%s)", i, p.Name(), busList(p.BootBuses))
	}
	return m.refuse("disk %d fits on no controller a %s VM of the target has", i, p.Name())
}

// scsiModel is the model a disk of the source gets on bus: none but on
// SCSI, where it is the override's, the source's when the target builds
// it, else the one the guest family has a driver for.
func (m *mapper) scsiModel(bus sdk.Bus, sd sdk.Disk) (sdk.ControllerModel, string, error) {
	if bus != sdk.BusSCSI {
		return "", "", nil
	}
	p := m.p
	if o := m.o.SCSIModel; o != "" {
		if _, ok := p.Controller(bus, o); !ok {
			return "", "", m.refuse("%s asks for %s, which a %s VM of the target does not have", m.asked("scsi_model"), o, p.Name())
		}
		return o, m.asked("scsi_model"), nil
	}
	if sd.Bus == sdk.BusSCSI && sd.ControllerModel != "" {
		if _, ok := p.Controller(bus, sd.ControllerModel); ok {
			return sd.ControllerModel, "", nil
		}
	}
	if m.asGiven && sd.Bus == sdk.BusSCSI {
		return sd.ControllerModel, "", nil
	}
	for _, mdl := range scsiPreference[familyOf(m.family)] {
		if _, ok := p.Controller(bus, mdl); !ok {
			continue
		}
		var why string
		switch {
		case mdl == sdk.ModelHyperVSCSI:
			why = "Hyper-V's SCSI controller is its synthetic one"
		case sd.Bus == sdk.BusSCSI && sd.ControllerModel == "":
			why = fmt.Sprintf("the source does not say which SCSI adapter; %s has a driver in %s guests", mdl, familyName(m.family))
		case sd.Bus == sdk.BusSCSI:
			why = fmt.Sprintf("the target builds no %s; %s has a driver in %s guests", sd.ControllerModel, mdl, familyName(m.family))
		default:
			why = fmt.Sprintf("%s has a driver in %s guests", mdl, familyName(m.family))
		}
		return mdl, why, nil
	}
	return "", "", nil
}

func hasBus(p *sdk.HardwareProfile, b sdk.Bus) bool {
	for _, c := range p.Controllers {
		if c.Bus == b {
			return true
		}
	}
	return false
}

func busList(bs []sdk.Bus) string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = strings.ToUpper(string(b))
	}
	return strings.Join(out, ", ")
}

// nics gives each NIC a model the target builds.
func (m *mapper) nics() error {
	p := m.p
	if o := m.o.NICModel; o != "" && !slices.Contains(p.NICModels, o) {
		return m.refuse("%s asks for %s, which a %s VM of the target does not have (it has %s)", m.asked("nic_model"), o, p.Name(), nicList(p.NICModels))
	}
	for i, sn := range m.src.NICs {
		model, why := sn.Model, ""
		switch {
		case m.o.NICModel != "":
			model, why = m.o.NICModel, m.asked("nic_model")
		case model != "" && slices.Contains(p.NICModels, model):
		case m.asGiven:
		default:
			for _, c := range nicPreference[familyOf(m.family)] {
				if slices.Contains(p.NICModels, c) {
					model = c
					break
				}
			}
			switch {
			case model == sdk.NICHyperVSynthetic:
				why = "Hyper-V's network adapter is its synthetic one"
			case sn.Model == "":
				why = fmt.Sprintf("the source does not say which adapter; %s has a driver in %s guests", model, familyName(m.family))
			default:
				why = fmt.Sprintf("the target builds no %s; %s has a driver in %s guests", sn.Model, model, familyName(m.family))
			}
		}
		m.vm.NICs[i].Model = model
		if model != sn.Model {
			m.change(fmt.Sprintf("nic %d", i), orNone(string(sn.Model)), string(model), why)
		}
	}
	return nil
}

func nicList(ns []sdk.NICModel) string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = string(n)
	}
	return strings.Join(out, ", ")
}

// syncAttributes makes the Hyper-V plugin's attributes say what the
// model says, so that NormalizeHardware on the far side of the wire does
// not bring the source's back.
func syncAttributes(vm *sdk.VM) {
	hw := vm.Hardware
	delete(vm.Attributes, "hyperv.generation")
	delete(vm.Attributes, "hyperv.secure_boot")
	delete(vm.Attributes, "hyperv.tpm")
	if hw.Generation == 0 {
		return
	}
	if vm.Attributes == nil {
		vm.Attributes = map[string]string{}
	}
	vm.Attributes["hyperv.generation"] = strconv.Itoa(hw.Generation)
	vm.Attributes["hyperv.secure_boot"] = strconv.FormatBool(hw.SecureBoot)
	vm.Attributes["hyperv.tpm"] = strconv.FormatBool(hw.TPM)
}

// clone copies a VM deeply enough that the mapping never writes into the
// caller's.
func clone(v sdk.VM) sdk.VM {
	v.Disks = slices.Clone(v.Disks)
	v.NICs = slices.Clone(v.NICs)
	v.Attributes = maps.Clone(v.Attributes)
	v.Hardware.BootOrder = slices.Clone(v.Hardware.BootOrder)
	return v
}

// keptReason is why a replica's hardware differs from its mapping.
const keptReason = "the replica was built so, and ferry never rebuilds a replica's hardware: a replica created anew would be built as mapped"

// Kept lists where replica, a replica built earlier as its target
// describes it now, differs from mapped, what the mapping asks today (a
// hardware_map or the source changed since): each Change goes From what
// the replica keeps To what the mapping gives. What the target's
// description leaves out (an older plugin's) is never reported.
func Kept(replica, mapped sdk.VM) []Change {
	var out []Change
	add := func(item, keeps, mapping string) {
		if keeps != mapping {
			out = append(out, Change{Item: item, From: keeps, To: mapping, Reason: keptReason})
		}
	}
	told := replica.Firmware != "" || replica.Hardware.Firmware != ""
	r, m := clone(replica), clone(mapped)
	sdk.NormalizeHardware(&r)
	sdk.NormalizeHardware(&m)
	if told {
		add("firmware", r.Hardware.Firmware, m.Hardware.Firmware)
		add("secure boot", onOff(r.Hardware.SecureBoot), onOff(m.Hardware.SecureBoot))
		add("tpm", present(r.Hardware.TPM), present(m.Hardware.TPM))
	}
	if r.Hardware.Generation != 0 {
		add("generation", genName(r.Hardware.Generation), genName(m.Hardware.Generation))
	}
	for i, d := range r.Disks {
		if i >= len(m.Disks) || d.Bus == "" {
			continue
		}
		md := m.Disks[i]
		if d.Bus == md.Bus && (d.ControllerModel == "" || md.ControllerModel == "") {
			d.ControllerModel, md.ControllerModel = "", "" // a model one side does not tell
		}
		add(fmt.Sprintf("disk %d", i), slotOf(d), slotOf(md))
	}
	for i, n := range replica.NICs {
		if i >= len(m.NICs) || n.Model == "" {
			continue
		}
		add(fmt.Sprintf("nic %d", i), string(r.NICs[i].Model), orNone(string(m.NICs[i].Model)))
	}
	return out
}

// slotOf names where a disk sits: its bus position and SCSI model.
func slotOf(d sdk.Disk) string {
	d.Controller = sdk.ControllerPosition(d.Bus, d.ControllerNumber, d.Unit)
	return d.Slot()
}

func present(b bool) string {
	if b {
		return "present"
	}
	return "none"
}
