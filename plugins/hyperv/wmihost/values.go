package wmihost

import (
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// WMI's scripting interface hands 64-bit integers over as strings and
// smaller ones as int32; these read either.

func toInt64(v any) (int64, error) {
	switch x := v.(type) {
	case int32:
		return int64(x), nil
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint64:
		if x > 1<<63-1 {
			return 0, fmt.Errorf("%d does not fit an int64: %w", x, errdefs.ErrInvalidArgument)
		}
		return int64(x), nil
	case string:
		n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("integer %q: %w", x, errdefs.ErrInvalidArgument)
		}
		return n, nil
	case nil:
		return 0, fmt.Errorf("no value where an integer was expected: %w", errdefs.ErrInvalidArgument)
	}
	return 0, fmt.Errorf("%T where an integer was expected: %w", v, errdefs.ErrInvalidArgument)
}

// toInt reads a small integer property; a missing one (null) is 0.
func toInt(v any) int {
	if v == nil {
		return 0
	}
	n, err := toInt64(v)
	if err != nil {
		return 0
	}
	return int(n)
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}

func toBool(v any) bool {
	b, _ := v.(bool)
	return b
}

// toStrings reads a string array property (null is none).
func toStrings(v any) []string {
	switch x := v.(type) {
	case []string:
		return x
	case string:
		return []string{x}
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// eachInt64 converts every element of xs with toInt64.
func eachInt64[T any](xs []T) ([]int64, error) {
	out := make([]int64, len(xs))
	for i, e := range xs {
		n, err := toInt64(e)
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

func toInt64s(v any) ([]int64, error) {
	switch x := v.(type) {
	case nil:
		return nil, nil
	case []any:
		return eachInt64(x)
	case []string:
		return eachInt64(x)
	}
	n, err := toInt64(v)
	if err != nil {
		return nil, err
	}
	return []int64{n}, nil
}

// wqlString quotes s as a WQL string literal.
func wqlString(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `'`, `\'`)
	return "'" + s + "'"
}

// cimTime reads a CIM DATETIME ("20250102030405.123456+060": the offset
// is minutes east of UTC).
func cimTime(s string) (time.Time, error) {
	if len(s) != 25 || s[14] != '.' || (s[21] != '+' && s[21] != '-') {
		return time.Time{}, fmt.Errorf("CIM datetime %q: %w", s, errdefs.ErrInvalidArgument)
	}
	t, err := time.Parse("20060102150405", s[:14])
	if err != nil {
		return time.Time{}, fmt.Errorf("CIM datetime %q: %w", s, errdefs.ErrInvalidArgument)
	}
	us, err1 := strconv.Atoi(s[15:21])
	off, err2 := strconv.Atoi(s[22:])
	if err1 != nil || err2 != nil {
		return time.Time{}, fmt.Errorf("CIM datetime %q: %w", s, errdefs.ErrInvalidArgument)
	}
	if s[21] == '-' {
		off = -off
	}
	// t was read as UTC; the wall clock was off minutes east of it.
	return t.Add(time.Duration(us)*time.Microsecond - time.Duration(off)*time.Minute).UTC(), nil
}

// macOf writes Hyper-V's "00155D010203" as "00:15:5D:01:02:03".
func macOf(s string) string {
	s = strings.ToUpper(strings.NewReplacer(":", "", "-", "").Replace(s))
	if len(s) != 12 {
		return s
	}
	parts := make([]string, 6)
	for i := range parts {
		parts[i] = s[2*i : 2*i+2]
	}
	return strings.Join(parts, ":")
}

// secureBootTemplates are Hyper-V's Secure Boot templates
// (Msvm_VirtualSystemSettingData.SecureBootTemplateId, as
// Get-VMSecureBootTemplate lists them) by ferry's names.
var secureBootTemplates = map[string]string{
	sdk.SecureBootMicrosoftWindows: "1734c6e8-3154-4dda-ba5f-a874cc483422",
	sdk.SecureBootMicrosoftUEFICA:  "272e7447-90a4-4563-a4b9-8e4ab00526ce",
}

// templateID is the SecureBootTemplateId of a template ferry names; ""
// for "" (the host's default).
func templateID(name string) (string, error) {
	if name == "" {
		return "", nil
	}
	if id, ok := secureBootTemplates[name]; ok {
		return id, nil
	}
	return "", fmt.Errorf("secure boot template %q: %w", name, errdefs.ErrInvalidArgument)
}

// templateName is ferry's name of a SecureBootTemplateId; "" for one it
// does not know.
func templateName(id string) string {
	id = strings.Trim(strings.ToLower(id), "{}")
	for name, tid := range secureBootTemplates {
		if tid == id {
			return name
		}
	}
	return ""
}

// Msvm_VirtualSystemSettingData.VirtualSystemSubType by generation.
const (
	subTypeGen1 = "Microsoft:Hyper-V:SubType:1"
	subTypeGen2 = "Microsoft:Hyper-V:SubType:2"
)

func subType(gen int) (string, error) {
	switch gen {
	case 1:
		return subTypeGen1, nil
	case 2:
		return subTypeGen2, nil
	}
	return "", fmt.Errorf("generation %d: want 1 or 2: %w", gen, errdefs.ErrInvalidArgument)
}

func generationOf(sub string) int {
	if sub == subTypeGen2 {
		return 2
	}
	return 1
}

// Msvm_VirtualSystemSettingData.VirtualSystemType values.
const (
	vsTypeRealized = "Microsoft:Hyper-V:System:Realized"
	vsTypeSnapshot = "Microsoft:Hyper-V:Snapshot:Realized"
	vsTypeRecovery = "Microsoft:Hyper-V:Snapshot:Recovery"
)

// checkpointType maps a snapshot's VirtualSystemType to its kind; ok is
// false for a kind the plugin does not use (planned ones, for instance).
func checkpointType(vsType string) (host.CheckpointType, bool) {
	switch vsType {
	case vsTypeSnapshot:
		return host.Standard, true
	case vsTypeRecovery:
		return host.Recovery, true
	}
	return 0, false
}

// running reads Msvm_ComputerSystem.EnabledState: anything but off
// (3), saved (32769) or unknown counts as running, as it holds the disks
// open and a checkpoint of it is taken live.
func running(enabledState int) bool {
	switch enabledState {
	case 0, 1, 3, 32769:
		return false
	}
	return true
}

// The RequestStateChange states.
const (
	stateRunning = 2
	stateOff     = 3
)

// pathKey reads a key's value from a WMI object path such as
// `\\HV01\root\virtualization\v2:Msvm_VirtualEthernetSwitch.CreationClassName="Msvm_VirtualEthernetSwitch",Name="6A3..."`.
func pathKey(path, key string) string {
	_, keys, ok := strings.Cut(path, ".")
	if i := strings.Index(path, ":"); i >= 0 {
		_, keys, ok = strings.Cut(path[i+1:], ".")
	}
	if !ok {
		return ""
	}
	for keys != "" {
		name, rest, ok := strings.Cut(keys, "=")
		if !ok {
			return ""
		}
		var val string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			val, rest = b.String(), rest[min(i+1, len(rest)):]
		} else {
			val, rest, _ = strings.Cut(rest, ",")
			rest = "," + rest
		}
		if strings.EqualFold(name, key) {
			return val
		}
		keys = strings.TrimPrefix(rest, ",")
	}
	return ""
}

// joinNotes reads Msvm_VirtualSystemSettingData.Notes (a string array);
// the plugin writes one element, and lines joined back are the same text
// should Hyper-V split them.
func joinNotes(v any) string { return strings.Join(toStrings(v), "\n") }

// ReplicaNotesPrefix starts the notes of a VM ferry keeps as a replica
// (package hyperv's notesHeader starts with it; its tests keep it so).
// ferry wrote such a VM's disk files itself, past Hyper-V's change
// tracking, so its RCT ids are never trusted.
const ReplicaNotesPrefix = "ferry replica:"

func isFerryReplica(notes string) bool { return strings.HasPrefix(notes, ReplicaNotesPrefix) }

// FailbackNotesMarker starts the line package hyperv puts at the end of a
// production VM's notes while a failback writes it, and after its commit
// until a replication run has taken new change tracking ids (package
// hyperv's failbackHeader starts with it; its tests keep it so). ferry
// wrote such a VM's newest disk files itself, past Hyper-V's change
// tracking, so ids given before those writes are not trusted.
const FailbackNotesMarker = "ferry failback:"

// inFailback reports whether a VM's notes carry the failback marker on a
// line of its own.
func inFailback(notes string) bool {
	return strings.HasPrefix(notes, FailbackNotesMarker) || strings.Contains(notes, "\n"+FailbackNotesMarker)
}

// guestConfig is what Msvm_GuestNetworkAdapterConfiguration holds for a
// static configuration.
type guestConfig struct {
	ProtocolIFType int // 4096 IPv4, 4097 IPv6, 4098 both
	DHCPEnabled    bool
	IPAddresses    []string
	Subnets        []string // dotted masks for IPv4, prefix lengths for IPv6
	Gateways       []string
	DNSServers     []string
}

// guestConfigOf maps the plugin's guest network settings (addresses in
// CIDR form) to a static configuration. No address is DHCP.
func guestConfigOf(g host.GuestNetwork) (guestConfig, error) {
	c := guestConfig{DHCPEnabled: len(g.Addresses) == 0}
	var v4, v6 bool
	for _, a := range g.Addresses {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return guestConfig{}, fmt.Errorf("guest address %q: want CIDR form (10.1.0.5/24): %w", a, errdefs.ErrInvalidArgument)
		}
		c.IPAddresses = append(c.IPAddresses, p.Addr().String())
		if p.Addr().Is4() {
			v4 = true
			c.Subnets = append(c.Subnets, maskOf(p.Bits()))
		} else {
			v6 = true
			c.Subnets = append(c.Subnets, strconv.Itoa(p.Bits()))
		}
	}
	switch {
	case v4 && v6:
		c.ProtocolIFType = 4098
	case v6:
		c.ProtocolIFType = 4097
	default:
		c.ProtocolIFType = 4096
	}
	if g.Gateway != "" {
		if _, err := netip.ParseAddr(g.Gateway); err != nil {
			return guestConfig{}, fmt.Errorf("gateway %q: %w", g.Gateway, errdefs.ErrInvalidArgument)
		}
		c.Gateways = []string{g.Gateway}
	}
	for _, d := range g.DNS {
		if _, err := netip.ParseAddr(d); err != nil {
			return guestConfig{}, fmt.Errorf("DNS server %q: %w", d, errdefs.ErrInvalidArgument)
		}
	}
	c.DNSServers = append([]string(nil), g.DNS...)
	return c, nil
}

func maskOf(bits int) string {
	var m [4]byte
	for i := range 4 {
		n := min(max(bits-8*i, 0), 8)
		m[i] = byte(0xff << (8 - n))
	}
	return netip.AddrFrom4(m).String()
}

// guestOf reads an adapter's guest configuration back into the plugin's
// form. A subnet that does not parse leaves the address out rather than
// give it a wrong prefix.
func guestOf(ips, subnets, gateways, dns []string) host.GuestNetwork {
	var g host.GuestNetwork
	for i, ip := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil || i >= len(subnets) {
			continue
		}
		bits, ok := prefixBits(a, subnets[i])
		if !ok {
			continue
		}
		g.Addresses = append(g.Addresses, netip.PrefixFrom(a, bits).String())
	}
	if len(gateways) > 0 {
		g.Gateway = gateways[0]
	}
	g.DNS = append([]string(nil), dns...)
	return g
}

func prefixBits(a netip.Addr, subnet string) (int, bool) {
	subnet = strings.TrimPrefix(subnet, "/")
	if n, err := strconv.Atoi(subnet); err == nil {
		return n, n >= 0 && n <= a.BitLen()
	}
	m, err := netip.ParseAddr(subnet)
	if err != nil || !m.Is4() || !a.Is4() {
		return 0, false
	}
	b := m.As4()
	v := binary.BigEndian.Uint32(b[:])
	bits := 0
	for v&0x80000000 != 0 {
		bits++
		v <<= 1
	}
	return bits, v == 0
}

// Resource subtypes (ResourceSubType of the settings classes).
const (
	subIDE       = "Microsoft:Hyper-V:Emulated IDE Controller"
	subSCSI      = "Microsoft:Hyper-V:Synthetic SCSI Controller"
	subDiskDrive = "Microsoft:Hyper-V:Synthetic Disk Drive"
	subVHD       = "Microsoft:Hyper-V:Virtual Hard Disk"
	subNIC       = "Microsoft:Hyper-V:Synthetic Ethernet Port"
	subEthConn   = "Microsoft:Hyper-V:Ethernet Connection"
)

// controller is a disk controller of a VM's settings.
type controller struct {
	Path       string // its Msvm_ResourceAllocationSettingData's path
	InstanceID string
	Kind       string // "ide" or "scsi"
	Address    string // IDE: "0" or "1"
	Bus        int
}

// numberControllers gives each controller its number as Hyper-V's
// PowerShell module does: an IDE controller's is its Address; the SCSI
// controllers are numbered in the order of their InstanceIDs.
func numberControllers(cs []controller) {
	sort.SliceStable(cs, func(i, j int) bool { return cs[i].InstanceID < cs[j].InstanceID })
	scsi := 0
	for i := range cs {
		switch cs[i].Kind {
		case "ide":
			cs[i].Bus, _ = strconv.Atoi(cs[i].Address)
		case "scsi":
			cs[i].Bus = scsi
			scsi++
		}
	}
}

// slot is where a disk sits: a controller and a position on it.
type slot struct {
	Kind     string
	Bus      int
	Location int
}

// sortSlots orders disks as the plugin sees them (host.VM.Disks and each
// checkpoint's disks): IDE before SCSI, then by controller and position.
// A checkpoint's disks follow the same order, so index i names the same
// disk in the VM and in every checkpoint taken since it was attached.
func sortSlots[T any](items []T, slotOf func(T) slot) {
	sort.SliceStable(items, func(i, j int) bool {
		a, b := slotOf(items[i]), slotOf(items[j])
		if a.Kind != b.Kind {
			return a.Kind < b.Kind // "ide" < "scsi"
		}
		if a.Bus != b.Bus {
			return a.Bus < b.Bus
		}
		return a.Location < b.Location
	})
}

// embedded parses an embedded instance in WMI's DTD 2.0 text (what
// GetVirtualHardDiskSettingData answers) into its property values.
func embedded(text string) (class string, props map[string][]string, err error) {
	var inst struct {
		Class string `xml:"CLASSNAME,attr"`
		Props []struct {
			Name  string  `xml:"NAME,attr"`
			Value *string `xml:"VALUE"`
		} `xml:"PROPERTY"`
		Arrays []struct {
			Name   string   `xml:"NAME,attr"`
			Values []string `xml:"VALUE.ARRAY>VALUE"`
		} `xml:"PROPERTY.ARRAY"`
	}
	if err := xml.Unmarshal([]byte(text), &inst); err != nil {
		return "", nil, fmt.Errorf("embedded instance: %v: %w", err, errdefs.ErrInvalidArgument)
	}
	props = map[string][]string{}
	for _, p := range inst.Props {
		if p.Value != nil {
			props[p.Name] = []string{*p.Value}
		}
	}
	for _, a := range inst.Arrays {
		props[a.Name] = a.Values
	}
	return inst.Class, props, nil
}

// The layout of GET_VIRTUAL_DISK_INFO with Version =
// GET_VIRTUAL_DISK_INFO_CHANGE_TRACKING_STATE (virtdisk.h): the version
// (4 bytes), the union aligned to 8, then BOOL Enabled, BOOL NewerChanges
// and the NUL-terminated UTF-16 MostRecentId.
const (
	infoChangeTrackingState = 15
	ctsEnabled              = 8
	ctsID                   = 16
)

// changeTrackingState reads virtdisk's answer: whether change tracking is
// on, and the file's most recent RCT id.
func changeTrackingState(buf []byte) (enabled bool, id string, err error) {
	if len(buf) < ctsID+2 {
		return false, "", errors.New("change tracking state: short answer")
	}
	if v := binary.LittleEndian.Uint32(buf); v != infoChangeTrackingState {
		return false, "", fmt.Errorf("change tracking state: version %d", v)
	}
	enabled = binary.LittleEndian.Uint32(buf[ctsEnabled:]) != 0
	var u []uint16
	for i := ctsID; i+1 < len(buf); i += 2 {
		c := binary.LittleEndian.Uint16(buf[i:])
		if c == 0 {
			return enabled, string(utf16.Decode(u)), nil
		}
		u = append(u, c)
	}
	return false, "", errors.New("change tracking state: id not terminated")
}

// isGUID tells a VM's Msvm_ComputerSystem (named by its GUID) from the
// host's (named by the host's name).
func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		switch {
		case i == 8 || i == 13 || i == 18 || i == 23:
			if c != '-' {
				return false
			}
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f', 'A' <= c && c <= 'F':
		default:
			return false
		}
	}
	return true
}

// guestBackup reads the guest's Backup (VSS) integration service
// (Msvm_VssComponent): enabled (EnabledState 2) and answering
// (OperationalStatus starts with 2, OK).
func guestBackup(enabledState int, status []int64) bool {
	return enabledState == 2 && len(status) > 0 && status[0] == 2
}
