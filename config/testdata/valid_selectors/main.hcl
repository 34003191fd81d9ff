# VMs named one by one and picked by folder and tag, some excluded.
source "vsphere" "vc" {
  url      = "https://vc-prod.example.com/sdk"
  username = "ferry@vsphere.local"
  password = env("FERRY_TEST_PASSWORD")
}

target "vsphere" "dr" {
  url      = "https://vc-dr.example.com/sdk"
  username = "ferry@vsphere.local"
  password = env("FERRY_TEST_PASSWORD")
}

job "web" {
  source = source.vsphere.vc
  target = target.vsphere.dr
  vms = [
    "web-01",                 # by name
    "/Prod/vm/app/app-01",    # by inventory path
    "folder:/Prod/vm/web/",   # every VM in the folder and its subfolders
    "tag:tier/gold",          # every VM with the tag gold of category tier
    "tag:critical",           # tag critical of any category
    "db:primary",             # a VM whose name holds a colon
    "vm:tag:legacy",          # a VM whose name reads like a selector
  ]
  exclude = ["web-test-01", "tag:ferry/no-dr", "folder:/Prod/vm/web/scratch"]
  # The most a vSphere target keeps.
  retention { restore_points = 28 }
}

job "everything" {
  source = source.vsphere.vc
  target = target.vsphere.dr
  vms    = ["folder:/"]
}
