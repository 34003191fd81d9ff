package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

const planJobs = `
source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }
job "db" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["db-01", "db-02"]
}
job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01", "app-01"]
}
`

func TestFailoverPlan(t *testing.T) {
	src := planJobs + `
failover_plan "shop" {
  test_schedule = "CRON_TZ=Europe/Berlin 0 3 * * SUN"
  pre_script  = "./notify.sh start"
  post_script = ["./notify.sh", "done"]
  test_network_map {
    from = "prod-net"
    to   = "lab-net"
  }
  test_network_map {
    from = "backup-net"
    to   = "lab-backup"
  }
  group "db" {
    vms = ["db/db-01", "db/db-02"]
    ready {
      tcp_port = 5432
      timeout  = "2m"
    }
  }
  group "app" {
    vms        = ["web/app-01"]
    depends_on = ["db"]
    ready { script = "./check-app.sh" }
  }
  group "web" {
    vms        = ["web/web-01"]
    depends_on = ["app"]
    ready { delay = "30s" }
  }
}
`
	cfg, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(src)}, testSchemas())
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	p := cfg.FailoverPlans["shop"]
	if p == nil || len(p.Groups) != 3 {
		t.Fatalf("plan %+v", p)
	}
	db, app, web := p.Groups[0], p.Groups[1], p.Groups[2]
	if len(db.VMs) != 2 || db.VMs[1].String() != "db/db-02" || db.Ready.TCPPort != 5432 || db.Ready.Timeout != 2*time.Minute {
		t.Errorf("group db %+v %+v", db, db.Ready)
	}
	if !slices.Equal(app.Ready.Script, []string{"./check-app.sh"}) || app.Ready.Timeout != DefaultReadyTimeout || web.Ready.Delay != 30*time.Second {
		t.Errorf("ready checks %+v %+v", app.Ready, web.Ready)
	}
	if !slices.Equal(p.PreScript, []string{"./notify.sh", "start"}) || !slices.Equal(p.PostScript, []string{"./notify.sh", "done"}) {
		t.Errorf("scripts %q %q", p.PreScript, p.PostScript)
	}
	if len(p.TestNetworkMap) != 2 || p.TestNetworkMap[1].From != "backup-net" || p.TestNetworkMap[1].To != "lab-backup" {
		t.Errorf("test_network_map %+v", p.TestNetworkMap)
	}
	if p.TestSchedule.String() != "0 3 * * SUN" || p.TestSchedule.Location().String() != "Europe/Berlin" {
		t.Errorf("test_schedule %q in %s", p.TestSchedule, p.TestSchedule.Location())
	}
	sunday := time.Date(2026, 12, 6, 2, 0, 0, 0, time.UTC) // a Sunday, 03:00 in Berlin
	if got := p.TestSchedule.Next(sunday.Add(-time.Hour)); !got.Equal(sunday) {
		t.Errorf("next test after %s: %s, want %s", sunday.Add(-time.Hour), got, sunday)
	}
	if !p.Before("db", "web") || !p.Before("db", "app") || p.Before("web", "db") || p.Before("app", "app") {
		t.Error("Before does not follow the dependencies")
	}
}

func TestFailoverPlanProblems(t *testing.T) {
	for _, c := range []struct {
		name, plans, summary, detail string
		line                         int
	}{
		{"not JOB/VM", `failover_plan "p" {
  group "a" { vms = ["db-01"] }
}`, "Invalid VM reference", `"db-01" is not JOB/VM`, 2},
		{"unknown job", `failover_plan "p" {
  group "a" { vms = ["mail/mx-01"] }
}`, "Unknown job", `names job "mail"`, 2},
		{"unknown VM", `failover_plan "p" {
  group "a" { vms = ["db/db-09"] }
}`, "Unknown VM", `VM "db-09" of job "db"`, 2},
		{"unknown group", `failover_plan "p" {
  group "a" {
    vms        = ["db/db-01"]
    depends_on = ["b"]
  }
}`, "Unknown group", `depends on "b"`, 2},
		{"cycle", `failover_plan "p" {
  group "a" {
    vms        = ["db/db-01"]
    depends_on = ["c"]
  }
  group "b" {
    vms        = ["db/db-02"]
    depends_on = ["a"]
  }
  group "c" {
    vms        = ["web/web-01"]
    depends_on = ["b"]
  }
}`, "Dependency cycle", "(a -> c -> b -> a)", 2},
		{"VM twice", `failover_plan "p" {
  group "a" { vms = ["db/db-01"] }
  group "b" { vms = ["db/db-01"] }
}`, "VM in two groups", `db/db-01 is in group "a" and in group "b"`, 3},
		{"empty ready", `failover_plan "p" {
  group "a" {
    vms = ["db/db-01"]
    ready {}
  }
}`, "Empty ready block", "a delay, a tcp_port or a script", 4},
		{"bad port", `failover_plan "p" {
  group "a" {
    vms = ["db/db-01"]
    ready { tcp_port = 70000 }
  }
}`, "Invalid port", "70000", 4},
		{"no group", `failover_plan "p" {}`, "Empty failover plan", "has no group", 1},
		{"test network mapped twice", `failover_plan "p" {
  group "a" { vms = ["db/db-01"] }
  test_network_map {
    from = "prod-net"
    to   = "lab"
  }
  test_network_map {
    from = "prod-net"
    to   = "lab-2"
  }
}`, "Duplicate network mapping", `Network "prod-net" is already mapped`, 8},
		{"empty test network", `failover_plan "p" {
  group "a" { vms = ["db/db-01"] }
  test_network_map {
    from = "prod-net"
    to   = " "
  }
}`, "Invalid network name", "must not be empty", 5},
		{"test network without to", `failover_plan "p" {
  group "a" { vms = ["db/db-01"] }
  test_network_map { from = "prod-net" }
}`, "Missing required argument", `"to" is required`, 3},
		{"test schedule not cron", `failover_plan "p" {
  group "a" { vms = ["db/db-01"] }

  test_schedule = "0 3 * *"
}`, "Invalid schedule", `"0 3 * *": 4 fields`, 4},
		{"test schedule too often", `failover_plan "p" {
  test_schedule = "every 500ms"
  group "a" { vms = ["db/db-01"] }
}`, "Invalid schedule", `the interval "500ms" is wrong: shorter than the minimum of 1s`, 2},
		{"test schedule in no zone", `failover_plan "p" {
  group "a" { vms = ["db/db-01"] }
  test_schedule = "CRON_TZ=Mars/Olympus @weekly"
}`, "Invalid schedule", `the time zone "Mars/Olympus" is wrong`, 3},
		{"test schedule empty", `failover_plan "p" {
  group "a" { vms = ["db/db-01"] }
  test_schedule = " "
}`, "Invalid schedule", "The test_schedule is empty. Leave the attribute out for a plan tested only when asked.", 3},
		{"test schedule no string", `failover_plan "p" {
  group "a" { vms = ["db/db-01"] }
  test_schedule = ["@daily"]
}`, "Incorrect attribute value type", "string required", 3},
		{"conflicting order", `failover_plan "p" {
  group "a" { vms = ["db/db-01"] }
  group "b" {
    vms        = ["web/web-01"]
    depends_on = ["a"]
  }
}
failover_plan "q" {
  group "a" { vms = ["web/web-01"] }
  group "b" {
    vms        = ["db/db-01"]
    depends_on = ["a"]
  }
}`, "Conflicting failover order", `plan "p" starts db/db-01 before web/web-01, and failover plan "q" starts web/web-01 before db/db-01`, 8},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := planJobs + c.plans + "\n"
			_, diags := LoadFiles("/cfg", map[string][]byte{"main.hcl": []byte(src)}, testSchemas())
			if !diags.HasErrors() {
				t.Fatal("no error")
			}
			d := diags[0]
			offset := strings.Count(planJobs, "\n")
			if d.Summary != c.summary || !strings.Contains(d.Detail, c.detail) || d.Subject == nil || d.Subject.Start.Line != offset+c.line {
				line := 0
				if d.Subject != nil {
					line = d.Subject.Start.Line - offset
				}
				t.Fatalf("%s: %s (line %d of the plans), want %s: %s (line %d)", d.Summary, d.Detail, line, c.summary, c.detail, c.line)
			}
		})
	}
}
