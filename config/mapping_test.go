package config

import (
	"strings"
	"testing"

	"github.com/ferry-dr/ferry/sdk"
)

// mappingSchemas are testSchemas with a local target that maps replicas.
func mappingSchemas() StaticComponents {
	s := testSchemas()
	local := s[sdk.KindTarget]["local"]
	local.Capabilities.MapReplicas = true
	s[sdk.KindTarget]["local"] = local
	return s
}

func TestReplicaMapping(t *testing.T) {
	src := `
source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }
job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01", "app-01"]
  replica_mapping {
    vm      = "web-01"
    replica = "web-01-restored"
  }
}
`
	cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(src)}, mappingSchemas())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	j := cfg.Jobs["web"]
	if got := j.ReplicaName("web-01", "web-01"); got != "web-01-restored" {
		t.Errorf("the mapped VM's replica is %q, want the VM it is mapped onto", got)
	}
	if got := j.ReplicaName("app-01", "app-01"); got != "app-01_replica" {
		t.Errorf("an unmapped VM's replica is %q, want app-01_replica", got)
	}
	if name, ok := j.Mapped("web-01"); !ok || name != "web-01-restored" {
		t.Errorf("Mapped(web-01) = %q, %v", name, ok)
	}
}

func TestReplicaMappingProblems(t *testing.T) {
	const jobHead = `
source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }
job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01", "app-01"]
`
	for _, c := range []struct {
		name, blocks, summary, detail string
		line                          int // in blocks
		plain                         bool
	}{
		{"unknown VM", `  replica_mapping {
    vm      = "web-02"
    replica = "old"
  }`, "Mapping of a VM the job does not name", `maps "web-02"`, 2, false},
		{"VM twice", `  replica_mapping {
    vm      = "web-01"
    replica = "old"
  }
  replica_mapping {
    vm      = "web-01"
    replica = "older"
  }`, "Duplicate replica mapping", `VM "web-01" is already mapped`, 6, false},
		{"replica twice", `  replica_mapping {
    vm      = "web-01"
    replica = "old"
  }
  replica_mapping {
    vm      = "app-01"
    replica = "old"
  }`, "Duplicate replica mapping", `"old" of the target is already mapped`, 7, false},
		{"path in the name", `  replica_mapping {
    vm      = "web-01"
    replica = "../etc"
  }`, "Invalid replica name", "path separator", 3, false},
		{"no replica", `  replica_mapping { vm = "web-01" }`, "Missing required argument", `"replica" is required`, 1, false},
		{"target cannot map", `  replica_mapping {
    vm      = "web-01"
    replica = "old"
  }`, "Replica mapping not supported", `target.local.dr (type "local") cannot make a VM it has a replica`, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := jobHead + c.blocks + "\n}\n"
			schemas := mappingSchemas()
			if c.plain {
				schemas = testSchemas()
			}
			_, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(src)}, schemas)
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			d := diags[0]
			offset := strings.Count(jobHead, "\n")
			if d.Summary != c.summary || !strings.Contains(d.Detail, c.detail) || d.Subject == nil || d.Subject.Start.Line != offset+c.line {
				line := 0
				if d.Subject != nil {
					line = d.Subject.Start.Line - offset
				}
				t.Fatalf("%s: %s (line %d of the blocks), want %s: %s (line %d)", d.Summary, d.Detail, line, c.summary, c.detail, c.line)
			}
		})
	}
}
