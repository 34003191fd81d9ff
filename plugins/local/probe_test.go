package local

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
)

func TestProbeTransport(t *testing.T) {
	dir := t.TempDir()
	prod := filepath.Join(dir, "prod")
	s := newSite(prod)
	if _, err := s.createVM(context.Background(), VMSpec{Name: "web-01", Disks: []int64{1 << 20}}); err != nil {
		t.Fatal(err)
	}
	src := &Source{site: s}
	ctx := context.Background()
	if mode, why, err := src.ProbeTransport(ctx, "web-01", 0); mode != sdk.TransportDirect || !strings.Contains(why, prod) || err != nil {
		t.Fatalf("probe of a VM here = %q, %q, %v", mode, why, err)
	}
	if mode, why, err := src.ProbeTransport(ctx, "web-01", 3); mode != "" || !strings.Contains(why, "disk3.img") || err != nil {
		t.Fatalf("probe of a disk the VM lacks = %q, %q, %v", mode, why, err)
	}
	gone := &Source{site: newSite(filepath.Join(dir, "not-mounted"))}
	if mode, why, err := gone.ProbeTransport(ctx, "web-01", -1); mode != "" || !strings.Contains(why, "not on this machine") || err != nil {
		t.Fatalf("probe of a site not here = %q, %q, %v", mode, why, err)
	}
	tgt := &Target{root: prod}
	if mode, _, err := tgt.ProbeTransport(ctx, "", -1); mode != sdk.TransportDirect || err != nil {
		t.Fatalf("target probe = %q, %v", mode, err)
	}
	if mode, _, _ := (&Target{root: filepath.Join(dir, "nope")}).ProbeTransport(ctx, "", -1); mode != "" {
		t.Fatalf("probe of a target folder not here = %q", mode)
	}
}
