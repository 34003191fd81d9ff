package wmihost

import (
	"context"
	"encoding/binary"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/ferry-dr/ferry/plugins/hyperv/host"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestMethodError(t *testing.T) {
	for _, tc := range []struct {
		name string
		rc   int
		want error
	}{
		{"completed", rcCompleted, nil},
		{"job", rcJobStarted, nil},
		{"access denied", rcAccessDenied, errdefs.ErrPermissionDenied},
		{"invalid parameter", rcInvalidParam, errdefs.ErrInvalidArgument},
		{"invalid state", rcInvalidState, errdefs.ErrFailedPrecondition},
		{"in use", rcSystemInUse, errdefs.ErrUnavailable},
		{"file not found", rcFileNotFound, errdefs.ErrNotFound},
		{"not supported", rcNotSupported, errdefs.ErrUnimplemented},
		{"failed", rcFailed, errdefs.ErrFailedPrecondition},
		{"unknown code", 4, errdefs.ErrFailedPrecondition},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := methodError("CreateSnapshot", tc.rc)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want class %v", err, tc.want)
			}
		})
	}
	if !retryable(rcSystemInUse) || !retryable(rcInvalidState) || retryable(rcFailed) {
		t.Fatal("retryable codes")
	}
}

func TestJobError(t *testing.T) {
	for _, tc := range []struct {
		name     string
		j        job
		want     error
		contains string
	}{
		{"completed", job{State: jobCompleted}, nil, ""},
		{"exception with code", job{State: jobException, ErrorCode: rcAccessDenied, ErrorDescription: "denied to you"}, errdefs.ErrPermissionDenied, "denied to you"},
		{"exception without code", job{State: jobException, ErrorSummary: "merge failed"}, errdefs.ErrFailedPrecondition, "merge failed"},
		{"killed", job{State: jobKilled, ErrorCode: rcFailed}, errdefs.ErrUnavailable, "no description"},
		{"completed with error", job{State: jobCompleted, ErrorCode: rcFailed, ErrorDescription: "x"}, errdefs.ErrFailedPrecondition, "x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := jobError("DestroySnapshot", tc.j)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want class %v", err, tc.want)
			}
			if !contains(err.Error(), tc.contains) {
				t.Fatalf("%v does not say %q", err, tc.contains)
			}
		})
	}
	for _, s := range []int{jobNew, jobStarting, jobRunning, jobSuspended, jobShuttingDown} {
		if jobDone(s) {
			t.Errorf("state %d done", s)
		}
	}
	for _, s := range []int{jobCompleted, jobTerminated, jobKilled, jobException} {
		if !jobDone(s) {
			t.Errorf("state %d not done", s)
		}
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}

func TestChangeRanges(t *testing.T) {
	for _, tc := range []struct {
		name      string
		offs, lns any
		want      []host.Extent
		err       error
	}{
		{"strings as WMI gives uint64", []any{"0", "1048576"}, []any{"4096", "512"}, []host.Extent{ext(0, 4096), ext(1048576, 512)}, nil},
		{"none", nil, nil, []host.Extent{}, nil},
		{"zero lengths dropped", []any{"0", "10"}, []any{"0", "5"}, []host.Extent{ext(10, 5)}, nil},
		{"mismatch", []any{"0"}, []any{}, nil, errdefs.ErrDataLoss},
		{"negative", []any{"-1"}, []any{"1"}, nil, errdefs.ErrDataLoss},
		{"garbage", []any{"x"}, []any{"1"}, nil, errdefs.ErrInvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := changeRanges(tc.offs, tc.lns)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("got %v, want %v", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func ext(off, n int64) host.Extent { return host.Extent{Offset: off, Length: n} }

func TestWalkChanges(t *testing.T) {
	// A host that processes at most 100 bytes per call and reports
	// ranges unsorted, overlapping and past what it processed.
	changed := []host.Extent{ext(250, 30), ext(10, 20), ext(20, 20), ext(90, 20)}
	q := func(_ context.Context, off, n int64) (int64, []host.Extent, error) {
		return min(n, 100), changed, nil
	}
	var got [][]host.Extent
	err := walkChanges(context.Background(), 300, q, func(e []host.Extent) error {
		got = append(got, append([]host.Extent(nil), e...))
		return nil
	})
	want := [][]host.Extent{{ext(10, 30), ext(90, 10)}, {ext(100, 10)}, {ext(250, 30)}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}

	for _, tc := range []struct {
		name      string
		processed int64
	}{{"nothing processed", 0}, {"more than asked", 1000}} {
		t.Run(tc.name, func(t *testing.T) {
			q := func(context.Context, int64, int64) (int64, []host.Extent, error) { return tc.processed, nil, nil }
			err := walkChanges(context.Background(), 300, q, func([]host.Extent) error { return nil })
			if !errors.Is(err, errdefs.ErrDataLoss) {
				t.Fatalf("got %v", err)
			}
		})
	}
}

func TestChangesError(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   error
		want error
	}{
		{"refused id", methodError("GetVirtualDiskChanges", rcInvalidParam), errdefs.ErrChangeIDReset},
		{"job failed", jobError("GetVirtualDiskChanges", job{State: jobException, ErrorCode: rcFailed}), errdefs.ErrChangeIDReset},
		{"host busy stays", methodError("GetVirtualDiskChanges", rcSystemInUse), errdefs.ErrUnavailable},
		{"cancelled stays", context.Canceled, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := changesError(0, "rctX:1", tc.in); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if err := changesError(0, "x", methodError("GetVirtualDiskChanges", rcSystemInUse)); errors.Is(err, errdefs.ErrChangeIDReset) {
		t.Fatal("a busy host is not a reset")
	}
}

func TestCIMTime(t *testing.T) {
	got, err := cimTime("20250102030405.250000+060")
	want := time.Date(2025, 1, 2, 2, 4, 5, 250000000, time.UTC)
	if err != nil || !got.Equal(want) {
		t.Fatalf("got %v, %v; want %v", got, err, want)
	}
	got, err = cimTime("20250102030405.000000-120")
	if err != nil || !got.Equal(time.Date(2025, 1, 2, 5, 4, 5, 0, time.UTC)) {
		t.Fatalf("got %v, %v", got, err)
	}
	for _, bad := range []string{"", "2025", "20250102030405.000000*000", "2025010203040x.000000+000"} {
		if _, err := cimTime(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%q: got %v", bad, err)
		}
	}
}

func TestToInt64(t *testing.T) {
	for _, tc := range []struct {
		in   any
		want int64
		ok   bool
	}{{int32(7), 7, true}, {"17179869184", 17179869184, true}, {uint64(5), 5, true}, {uint64(1 << 63), 0, false}, {nil, 0, false}, {"x", 0, false}, {1.5, 0, false}} {
		got, err := toInt64(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("%#v: got %d, %v", tc.in, got, err)
		}
	}
	if toInt(nil) != 0 || toInt(int32(3)) != 3 {
		t.Error("toInt")
	}
	if !reflect.DeepEqual(toStrings([]any{"a", 1, "b"}), []string{"a", "b"}) || toStrings(nil) != nil || toString(3) != "" || toBool("true") {
		t.Error("toStrings, toString, toBool")
	}
}

func TestPathKey(t *testing.T) {
	sw := `\\HV01.example.com\root\virtualization\v2:Msvm_VirtualEthernetSwitch.CreationClassName="Msvm_VirtualEthernetSwitch",Name="6A3B-11"`
	rasd := `\\HV01\root\virtualization\v2:Msvm_ResourceAllocationSettingData.InstanceID="Microsoft:4D0E\\83F8\\0\\0\\D"`
	for _, tc := range []struct{ path, key, want string }{
		{sw, "Name", "6A3B-11"},
		{sw, "CreationClassName", "Msvm_VirtualEthernetSwitch"},
		{sw, "Missing", ""},
		{rasd, "InstanceID", `Microsoft:4D0E\83F8\0\0\D`},
		{`Msvm_ConcreteJob.InstanceID="J1"`, "instanceid", "J1"},
		{"", "InstanceID", ""},
	} {
		if got := pathKey(tc.path, tc.key); got != tc.want {
			t.Errorf("pathKey(%q, %q) = %q, want %q", tc.path, tc.key, got, tc.want)
		}
	}
}

func TestMappings(t *testing.T) {
	if s, err := subType(2); err != nil || s != subTypeGen2 || generationOf(s) != 2 {
		t.Error("generation 2")
	}
	if s, err := subType(1); err != nil || generationOf(s) != 1 {
		t.Error("generation 1")
	}
	if _, err := subType(3); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Error("generation 3")
	}
	if c, ok := checkpointType(vsTypeRecovery); !ok || c != host.Recovery {
		t.Error("recovery")
	}
	if c, ok := checkpointType(vsTypeSnapshot); !ok || c != host.Standard {
		t.Error("standard")
	}
	if _, ok := checkpointType(vsTypeRealized); ok {
		t.Error("a VM's own settings are no checkpoint")
	}
	for st, want := range map[int]bool{stateRunning: true, stateOff: false, 32769: false, 32768: true, 0: false} {
		if running(st) != want {
			t.Errorf("running(%d) != %v", st, want)
		}
	}
	if macOf("00155d010203") != "00:15:5D:01:02:03" || macOf("bad") != "BAD" {
		t.Error("macOf")
	}
	if wqlString(`it's C:\vm`) != `'it\'s C:\\vm'` {
		t.Error(wqlString(`it's C:\vm`))
	}
	if joinNotes([]any{"ferry replica: x", `{"a":1}`}) != "ferry replica: x\n{\"a\":1}" {
		t.Error("joinNotes")
	}
	if !isFerryReplica("ferry replica: managed by ferry-plugin-hyperv; do not edit\n{}") || isFerryReplica("my notes") {
		t.Error("isFerryReplica")
	}
	for notes, want := range map[string]bool{
		"ferry failback: x {}":                    true,
		"my notes\nferry failback: x {}":          true,
		"my notes":                                false,
		"see ferry failback: in the docs":         false,
		"ferry replica: x\n{\"state\":\"ready\"}": false,
	} {
		if inFailback(notes) != want {
			t.Errorf("inFailback(%q) = %v", notes, !want)
		}
	}
	if !isGUID("4D0E2F5A-1B2C-4D3E-8F90-0123456789AB") || isGUID("HV01") || isGUID("4D0E2F5A-1B2C-4D3E-8F90-0123456789AZ") {
		t.Error("isGUID")
	}
	if !guestBackup(2, []int64{2}) || guestBackup(3, []int64{2}) || guestBackup(2, []int64{12}) || guestBackup(2, nil) {
		t.Error("guestBackup")
	}
}

func TestGuestNetwork(t *testing.T) {
	g := host.GuestNetwork{Addresses: []string{"10.1.0.5/24", "fd00::5/64"}, Gateway: "10.1.0.1", DNS: []string{"10.1.0.2"}}
	c, err := guestConfigOf(g)
	if err != nil {
		t.Fatal(err)
	}
	want := guestConfig{ProtocolIFType: 4098, IPAddresses: []string{"10.1.0.5", "fd00::5"}, Subnets: []string{"255.255.255.0", "64"},
		Gateways: []string{"10.1.0.1"}, DNSServers: []string{"10.1.0.2"}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v, want %+v", c, want)
	}
	if back := guestOf(c.IPAddresses, c.Subnets, c.Gateways, c.DNSServers); !reflect.DeepEqual(back, g) {
		t.Fatalf("round trip: got %+v, want %+v", back, g)
	}
	if c, err := guestConfigOf(host.GuestNetwork{}); err != nil || !c.DHCPEnabled || c.ProtocolIFType != 4096 {
		t.Fatalf("no address: %+v, %v", c, err)
	}
	for _, bad := range []host.GuestNetwork{{Addresses: []string{"10.1.0.5"}}, {Gateway: "x"}, {DNS: []string{"y"}}} {
		if _, err := guestConfigOf(bad); !errors.Is(err, errdefs.ErrInvalidArgument) {
			t.Errorf("%+v: got %v", bad, err)
		}
	}
	for bits, mask := range map[int]string{0: "0.0.0.0", 8: "255.0.0.0", 22: "255.255.252.0", 32: "255.255.255.255"} {
		if maskOf(bits) != mask {
			t.Errorf("maskOf(%d) = %s", bits, maskOf(bits))
		}
	}
	// A mask with holes, or a subnet missing, leaves the address out.
	if g := guestOf([]string{"10.0.0.1", "10.0.0.2"}, []string{"255.0.255.0"}, nil, nil); len(g.Addresses) != 0 {
		t.Fatalf("got %v", g.Addresses)
	}
}

func TestSlots(t *testing.T) {
	cs := []controller{
		{InstanceID: "Microsoft:X\\C", Kind: "scsi"},
		{InstanceID: "Microsoft:X\\B", Kind: "ide", Address: "1"},
		{InstanceID: "Microsoft:X\\A", Kind: "scsi"},
		{InstanceID: "Microsoft:X\\D", Kind: "ide", Address: "0"},
	}
	numberControllers(cs)
	bus := map[string]int{}
	for _, c := range cs {
		bus[c.InstanceID] = c.Bus
	}
	if want := map[string]int{"Microsoft:X\\A": 0, "Microsoft:X\\C": 1, "Microsoft:X\\B": 1, "Microsoft:X\\D": 0}; !reflect.DeepEqual(bus, want) {
		t.Fatalf("got %v, want %v", bus, want)
	}
	s := []slot{{"scsi", 1, 0}, {"scsi", 0, 2}, {"ide", 1, 0}, {"scsi", 0, 1}, {"ide", 0, 1}}
	sortSlots(s, func(x slot) slot { return x })
	want := []slot{{"ide", 0, 1}, {"ide", 1, 0}, {"scsi", 0, 1}, {"scsi", 0, 2}, {"scsi", 1, 0}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("got %v", s)
	}
	_ = []string{subIDE, subSCSI, subDiskDrive, subVHD, subNIC, subEthConn}
}

func TestEmbedded(t *testing.T) {
	text := `<INSTANCE CLASSNAME="Msvm_VirtualHardDiskSettingData"><PROPERTY NAME="MaxInternalSize" TYPE="uint64"><VALUE>10737418240</VALUE></PROPERTY>` +
		`<PROPERTY NAME="ParentPath" TYPE="string"><VALUE>D:\vm\a.vhdx</VALUE></PROPERTY><PROPERTY NAME="Empty" TYPE="string"></PROPERTY>` +
		`<PROPERTY.ARRAY NAME="HostResource" TYPE="string"><VALUE.ARRAY><VALUE>x</VALUE><VALUE>y</VALUE></VALUE.ARRAY></PROPERTY.ARRAY></INSTANCE>`
	class, props, err := embedded(text)
	if err != nil || class != "Msvm_VirtualHardDiskSettingData" {
		t.Fatal(class, err)
	}
	want := map[string][]string{"MaxInternalSize": {"10737418240"}, "ParentPath": {`D:\vm\a.vhdx`}, "HostResource": {"x", "y"}}
	if !reflect.DeepEqual(props, want) {
		t.Fatalf("got %v", props)
	}
	if _, _, err := embedded("<INSTANCE"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatal(err)
	}
}

func ctsBuffer(version uint32, enabled bool, id string, terminate bool) []byte {
	b := make([]byte, ctsID)
	binary.LittleEndian.PutUint32(b, version)
	if enabled {
		binary.LittleEndian.PutUint32(b[ctsEnabled:], 1)
	}
	for _, c := range utf16.Encode([]rune(id)) {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	if terminate {
		b = append(b, 0, 0)
	}
	return b
}

func TestChangeTrackingState(t *testing.T) {
	id := "rctX:c2eb01d9:ccb1:405d:acb6:f0e76d055906:1"
	if on, got, err := changeTrackingState(ctsBuffer(infoChangeTrackingState, true, id, true)); err != nil || !on || got != id {
		t.Fatalf("got %v %q %v", on, got, err)
	}
	if on, _, err := changeTrackingState(ctsBuffer(infoChangeTrackingState, false, "", true)); err != nil || on {
		t.Fatalf("off: %v %v", on, err)
	}
	for name, b := range map[string][]byte{
		"short":          {1, 2},
		"version":        ctsBuffer(14, true, id, true),
		"not terminated": ctsBuffer(infoChangeTrackingState, true, id, false),
	} {
		if _, _, err := changeTrackingState(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func FuzzEmbedded(f *testing.F) {
	f.Add(`<INSTANCE CLASSNAME="X"><PROPERTY NAME="A"><VALUE>1</VALUE></PROPERTY></INSTANCE>`)
	f.Fuzz(func(t *testing.T, s string) { embedded(s) })
}

func FuzzPathKey(f *testing.F) {
	f.Add(`\\H\root\v2:C.K="a\"b",L="c"`, "K")
	f.Fuzz(func(t *testing.T, p, k string) { pathKey(p, k) })
}

func FuzzChangeTrackingState(f *testing.F) {
	f.Add(ctsBuffer(infoChangeTrackingState, true, "rct:1", true))
	f.Fuzz(func(t *testing.T, b []byte) { changeTrackingState(b) })
}

// TestSecureBootTemplates: ferry's template names map to Hyper-V's ids
// and back (braces and case as WMI may give them); an unknown name is
// refused, an unknown id is no name.
func TestSecureBootTemplates(t *testing.T) {
	for _, name := range []string{sdk.SecureBootMicrosoftWindows, sdk.SecureBootMicrosoftUEFICA} {
		id, err := templateID(name)
		if err != nil || id == "" {
			t.Fatalf("templateID(%q) = %q, %v", name, id, err)
		}
		if got := templateName("{" + strings.ToUpper(id) + "}"); got != name {
			t.Fatalf("templateName of %s = %q, want %q", id, got, name)
		}
	}
	if id, err := templateID(""); id != "" || err != nil {
		t.Fatalf("no template: %q, %v", id, err)
	}
	if _, err := templateID("open-source-shielded"); !errors.Is(err, errdefs.ErrInvalidArgument) {
		t.Fatalf("an unknown template: %v", err)
	}
	if got := templateName("00000000-0000-0000-0000-000000000000"); got != "" {
		t.Fatalf("an unknown id is %q", got)
	}
}
