package hyperv

import (
	"context"
	"testing"

	"github.com/ferry-dr/ferry/plugins/hyperv/simhost"
	"github.com/ferry-dr/ferry/sdk"
	"github.com/ferry-dr/ferry/sdk/sdktest"
)

// The SDK's conformance suites against the simulated host, called directly
// and through the plugin protocol.

func sourceFixture(t *testing.T) sdktest.SourceFixture {
	h := newSim(t)
	sourceVM(t, h, "conform")
	sourceVM(t, h, "other")
	return sdktest.SourceFixture{
		New:          func(*testing.T) sdk.Source { return NewSource(h) },
		Capabilities: SourceCapabilities,
		VM:           "conform",
		Write: func(t *testing.T, vm string, disk int, off int64, data []byte) {
			if err := h.GuestWrite(context.Background(), vm, disk, off, data); err != nil {
				t.Fatal(err)
			}
		},
		ResetChangeTracking: func(t *testing.T, vm string, disk int) {
			if err := h.ResetChangeTracking(context.Background(), vm, disk); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func TestConformanceSource(t *testing.T) {
	sdktest.RunSource(t, sourceFixture(t))
}

func TestConformanceSourceOverWire(t *testing.T) {
	fx := sourceFixture(t)
	direct := fx.New(t).(*Source)
	c := sdktest.Connect(t, Plugin())
	p := Plugin().Sources["hyperv"]
	src, diags, err := c.Source(context.Background(), "hyperv", p.Schema, hostValue(direct.h.Name()))
	if err != nil || diags.HasErrors() {
		t.Fatal(err, diags.Err())
	}
	fx.New = func(*testing.T) sdk.Source { return src }
	sdktest.RunSource(t, fx)
}

func TestConformanceTarget(t *testing.T) {
	h := newSim(t)
	cur := NewTarget(h, "")
	sdktest.RunTarget(t, sdktest.TargetFixture{
		New:          func(*testing.T) sdk.Target { return cur },
		Capabilities: TargetCapabilities,
		Crash: func(t *testing.T) {
			cur.crashForTest()
			cur = NewTarget(h, "")
		},
		WriteFailedOver: guestWriter(h),
	})
}

func TestConformanceTargetOverWire(t *testing.T) {
	h := newSim(t)
	c := sdktest.Connect(t, Plugin())
	p := Plugin().Targets["hyperv"]
	tgt, diags, err := c.Target(context.Background(), "hyperv", p.Schema, targetValue(h.Name()))
	if err != nil || diags.HasErrors() {
		t.Fatal(err, diags.Err())
	}
	sdktest.RunTarget(t, sdktest.TargetFixture{New: func(*testing.T) sdk.Target { return tgt }, Capabilities: p.Capabilities, WriteFailedOver: guestWriter(h)})
}

func TestConformancePlugin(t *testing.T) {
	sdktest.RunPlugin(t, Plugin())
}

// guestWriter writes into a VM of h as its guest would (a failed-over
// replica, for the FailbackRead check).
func guestWriter(h *simhost.Host) func(t *testing.T, vm string, disk int, off int64, data []byte) {
	return func(t *testing.T, vm string, disk int, off int64, data []byte) {
		if err := h.GuestWrite(context.Background(), vm, disk, off, data); err != nil {
			t.Fatal(err)
		}
	}
}
