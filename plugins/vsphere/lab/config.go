package lab

import (
	"fmt"
	"strconv"
	"strings"
)

// configFile is the name of the configuration `up` writes.
const configFile = "lab.hcl"

// configInput is what the configuration depends on.
type configInput struct {
	Dir      string   // the lab folder, for the comment
	Password string   // both sites'
	Prod, DR SiteInfo // CAFile relative to the configuration folder
	VMs      []string
}

// renderConfig writes the lab's configuration: the prod site as a vsphere
// source verified by its certificate file, the dr site as a vsphere target
// pinned by thumbprint (the two ways a real one is configured), both with
// direct access to their datastores (the simulator keeps them in local
// folders), a local repository, and a job with a network map and re-IP
// rules.
func renderConfig(in configInput) string {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	vms := make([]string, len(in.VMs))
	for i, vm := range in.VMs {
		vms[i] = hclString(vm)
	}
	p(`# The ferry lab in %s, written by 'ferry lab up':
# two simulated vCenters on this machine. 'ferry lab down' stops them and
# removes this folder.
#
# The password is the lab's own, made up by 'ferry lab up'. A real
# configuration reads it from the environment: password = env("VSPHERE_PASSWORD").

# The production vCenter. Its certificate is verified with a CA file.
source "vsphere" "prod" {
  url        = %s
  username   = %s
  password   = %s
  ca_file    = %s
  datacenter = %s
  # Direct storage access: the simulated datastore is a folder here.
  local_datastore_paths = { %s = %s }
}

# The disaster-recovery vCenter. Its certificate is pinned by thumbprint.
target "vsphere" "dr" {
  url        = %s
  username   = %s
  password   = %s
  thumbprint = %s
  datacenter = %s
  cluster    = "DC0_C0"
  datastore  = %s
  local_datastore_paths = { %s = %s }
}

# Replica metadata (block digests, change ids) near the source.
repository "local" "meta" { path = "../%s" }

job %s {
  source     = source.vsphere.prod
  target     = target.vsphere.dr
  repository = repository.local.meta
  vms        = [%s]
  schedule   = "every 15m"
  retention { restore_points = 7 }

  network_map {
    from = %s
    to   = %s
  }
  re_ip {
    from_subnet = %s
    to_subnet   = %s
    gateway     = %s
    dns         = [%s]
  }
  transfer { compression = "auto" }
}
`,
		in.Dir,
		hclString(in.Prod.URL), hclString(in.Prod.Username), hclString(in.Password), hclString(in.Prod.CAFile), hclString(in.Prod.Datacenter),
		in.Prod.Datastore, hclString(in.Prod.DatastorePath),
		hclString(in.DR.URL), hclString(in.DR.Username), hclString(in.Password), hclString(in.DR.Thumbprint), hclString(in.DR.Datacenter),
		hclString(in.DR.Datastore), in.DR.Datastore, hclString(in.DR.DatastorePath),
		repoDir, hclString(jobName), strings.Join(vms, ", "),
		hclString(prodNet), hclString(drNet),
		hclString(fromSubnet), hclString(toSubnet), hclString(drGW), hclString(drDNS))
	return b.String()
}

// hclString quotes s as an HCL string literal: Go's escapes (HCL reads
// the same ones), and template sequences escaped so that a path holding
// "${" stays a path.
func hclString(s string) string {
	q := strconv.Quote(s)
	q = strings.ReplaceAll(q, "${", "$${")
	return strings.ReplaceAll(q, "%{", "%%{")
}
