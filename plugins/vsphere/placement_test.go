package vsphere

import (
	"errors"
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/sdk/errdefs"
)

func TestPickHost(t *testing.T) {
	t.Parallel()
	ok := func(name string, vms int) hostCandidate {
		return hostCandidate{Name: name, VMs: vms, Connected: true, SeesDatastore: true}
	}
	cases := []struct {
		name  string
		hosts []hostCandidate
		want  string // "" = error
		why   string
	}{
		{"fewest VMs", []hostCandidate{ok("h1", 5), ok("h2", 2), ok("h3", 3)}, "h2", ""},
		{"tie goes to the first name", []hostCandidate{ok("h3", 1), ok("h1", 1), ok("h2", 4)}, "h1", ""},
		{"skips disconnected", []hostCandidate{{Name: "h1", Connected: false, SeesDatastore: true}, ok("h2", 9)}, "h2", ""},
		{"skips maintenance", []hostCandidate{{Name: "h1", Connected: true, Maintenance: true, SeesDatastore: true}, ok("h2", 9)}, "h2", ""},
		{"skips hosts without the datastore", []hostCandidate{{Name: "h1", Connected: true}, ok("h2", 9)}, "h2", ""},
		{"none qualifies", []hostCandidate{{Name: "h1"}, {Name: "h2", Connected: true, Maintenance: true}}, "", "h2 is in maintenance mode"},
		{"no hosts", nil, "", "no hosts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := pickHost(tc.hosts)
			if tc.want == "" {
				if !errors.Is(err, errdefs.ErrFailedPrecondition) || !strings.Contains(err.Error(), tc.why) {
					t.Fatalf("pickHost = %v, %v; want an error saying %q", got, err, tc.why)
				}
				return
			}
			if err != nil || got.Name != tc.want {
				t.Fatalf("pickHost = %v, %v; want %s", got.Name, err, tc.want)
			}
		})
	}
}
