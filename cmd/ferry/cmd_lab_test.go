package main

import (
	"strings"
	"testing"
)

// TestLabPluginsFor: 'ferry lab up --dr hyperv' (in any spelling the lab
// program accepts) needs the hyperv plugin too; the other labs do not.
func TestLabPluginsFor(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "vsphere,local"},
		{[]string{"--dir", "/tmp/lab"}, "vsphere,local"},
		{[]string{"--dr", "vsphere"}, "vsphere,local"},
		{[]string{"--dr", "hyperv"}, "vsphere,local,hyperv"},
		{[]string{"--dir", "/tmp/lab", "--dr=hyperv"}, "vsphere,local,hyperv"},
		{[]string{"-dr", "hyperv", "--dir", "x"}, "vsphere,local,hyperv"},
		{[]string{"-dr=hyperv"}, "vsphere,local,hyperv"},
		{[]string{"--dir", "hyperv"}, "vsphere,local"},
	} {
		if got := strings.Join(labPluginsFor(tc.args), ","); got != tc.want {
			t.Errorf("labPluginsFor(%q) = %s, want %s", tc.args, got, tc.want)
		}
	}
	if strings.Join(labPlugins, ",") != "vsphere,local" {
		t.Fatalf("labPluginsFor changed labPlugins: %v", labPlugins)
	}
}
