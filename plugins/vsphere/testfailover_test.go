package vsphere

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/vmware/govmomi/simulator"
	"github.com/zclconf/go-cty/cty"

	"github.com/ferry-dr/ferry/plugins/vsphere/vcsimtest"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/errdefs"
)

// pointedReplica makes a one-disk replica with data and a restore point.
func pointedReplica(t *testing.T, tgt *Target, name string) *sdk.Replica {
	t.Helper()
	r := oneDiskReplica(t, tgt, name)
	writeReplica(t, tgt, r.ID, 0, 0, "point data")
	if _, err := tgt.CreateRestorePoint(t.Context(), r.ID, nil); err != nil {
		t.Fatal(err)
	}
	return r
}

// TestTestFailoverNetworks: a NIC the test's map leaves out goes on
// isolated_network; without one, or with one the site lacks, the test is
// refused with a message naming it, and nothing is left.
func TestTestFailoverNetworks(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	for _, tc := range []struct {
		name     string
		isolated string
		want     string
	}{
		{"no isolated network", "", "the target has no isolated_network"},
		{"isolated network missing", "no-such-pg", `isolated_network: network "no-such-pg" does not exist`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var extra map[string]cty.Value
			if tc.isolated != "" {
				extra = map[string]cty.Value{"isolated_network": cty.StringVal(tc.isolated)}
			}
			tgt := newTestTarget(t, s, extra)
			r := pointedReplica(t, tgt, "tf-"+strings.ReplaceAll(tc.name, " ", "-"))
			_, err := tgt.StartTest(t.Context(), sdk.TestRequest{ID: "t1", Replica: r.ID})
			if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("StartTest = %v, want a failed precondition saying %q", err, tc.want)
			}
			if l, err := tgt.ListTests(t.Context()); err != nil || len(l) != 0 {
				t.Fatalf("ListTests after a refusal = %+v, %v", l, err)
			}
		})
	}
	tgt := newTestTarget(t, s, map[string]cty.Value{"isolated_network": cty.StringVal(drIsolated)})
	r := pointedReplica(t, tgt, "tf-isolated")
	v, err := tgt.StartTest(t.Context(), sdk.TestRequest{ID: "t2", Replica: r.Name})
	if err != nil {
		t.Fatal(err)
	}
	defer tgt.StopTest(context.Background(), "t2")
	if len(v.VM.NICs) != 1 || v.VM.NICs[0].Network != drIsolated {
		t.Fatalf("the test VM's NICs are %+v, want one on %q", v.VM.NICs, drIsolated)
	}
	vm := s.VM(t, testNamePrefix+"t2")
	if vm.Runtime.PowerState != "poweredOn" || !strings.Contains(vm.Config.Annotation, `ferry test failover "t2"`) {
		t.Fatalf("the test VM is %s, annotated %q", vm.Runtime.PowerState, vm.Config.Annotation)
	}
	rs, err := tgt.ListReplicas(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range rs {
		if x.Name == vm.Name {
			t.Fatalf("ListReplicas lists the test VM %q as a replica", x.Name)
		}
	}
	if _, err := tgt.GetReplica(t.Context(), vm.Name); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("GetReplica of the test VM = %v, want ErrNotFound", err)
	}
}

// TestTestFailoverLeftovers: a start cut short after the clone (its
// power-on refused, and the clean-up's destroy too, as when the process
// dies) leaves a test VM that another target instance lists, with its
// labels, as not running; a start of its id is refused until StopTest
// removes it.
func TestTestFailoverLeftovers(t *testing.T) {
	t.Parallel()
	s := drSite(t)
	isolated := map[string]cty.Value{"isolated_network": cty.StringVal(drIsolated)}
	tgt := newTestTarget(t, s, isolated)
	r := pointedReplica(t, tgt, "tf-leftover")
	for _, m := range []string{"PowerOnVM_Task", "Destroy_Task"} {
		s.Model.Service.AddFaultRule(&simulator.FaultInjectionRule{MethodName: m, ObjectType: "VirtualMachine", ObjectName: testNamePrefix + "cut",
			Probability: 1, FaultType: simulator.FaultTypeGeneric, MaxCount: 1, Enabled: true})
	}
	labels := map[string]string{"ferry.plan": "web", "ferry.vm": "web-01"}
	if _, err := tgt.StartTest(t.Context(), sdk.TestRequest{ID: "cut", Replica: r.ID, Labels: labels}); err == nil {
		t.Fatal("StartTest succeeded with its power-on refused")
	}
	other := newTestTarget(t, s, isolated)
	l, err := other.ListTests(t.Context())
	if err != nil || len(l) != 1 || l[0].ID != "cut" || l[0].Running || l[0].Replica != r.ID || l[0].Labels["ferry.plan"] != "web" {
		t.Fatalf("ListTests of another instance = %+v, %v; want the leftover, not running, with its labels", l, err)
	}
	_, err = other.StartTest(t.Context(), sdk.TestRequest{ID: "cut", Replica: r.ID})
	if !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("StartTest over a leftover = %v, want ErrAlreadyExists", err)
	}
	for i := 0; i < 2; i++ {
		if err := other.StopTest(t.Context(), "cut"); err != nil {
			t.Fatalf("StopTest #%d: %v", i+1, err)
		}
	}
	if l, err := other.ListTests(t.Context()); err != nil || len(l) != 0 {
		t.Fatalf("ListTests after StopTest = %+v, %v", l, err)
	}
	if _, err := other.StartTest(t.Context(), sdk.TestRequest{ID: "cut", Replica: r.ID}); err != nil {
		t.Fatalf("StartTest after the leftover went: %v", err)
	}
	if err := other.StopTest(t.Context(), "cut"); err != nil {
		t.Fatal(err)
	}
}

// TestTestFailoverRefusesHotAdd: a replica written through HotAdd is
// refused with ErrUnimplemented (this version), leaving nothing.
func TestTestFailoverRefusesHotAdd(t *testing.T) {
	t.Parallel()
	s := hotaddDRSite(t)
	p := s.CreateProxy(t, vcsimtest.ProxySpec{Name: "dr-proxy"})
	tgt := hotaddTarget(t, s, p, t.TempDir())
	r := pointedReplica(t, tgt, "tf-hotadd")
	_, err := tgt.StartTest(t.Context(), sdk.TestRequest{ID: "h", Replica: r.ID,
		Network: sdk.NetworkConfig{NetworkMap: []sdk.NetworkMapping{{From: "VM Network", To: drIsolated}}}})
	if !errors.Is(err, errdefs.ErrUnimplemented) {
		t.Fatalf("StartTest of a HotAdd replica = %v, want ErrUnimplemented", err)
	}
	if l, err := tgt.ListTests(t.Context()); err != nil || len(l) != 0 {
		t.Fatalf("ListTests = %+v, %v", l, err)
	}
}
