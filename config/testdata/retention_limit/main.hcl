# A vSphere target keeps at most 28 restore points.
source "local" "prod" { path = "./prod" }

target "vsphere" "dr" {
  url      = "https://vc-dr.example.com/sdk"
  username = "ferry@vsphere.local"
  password = env("FERRY_TEST_PASSWORD")
}

job "web" {
  source = source.local.prod
  target = target.vsphere.dr
  vms    = ["web-01"]
  retention {
    restore_points = 40
  }
}

job "at-the-limit" {
  source = source.local.prod
  target = target.vsphere.dr
  vms    = ["db-01"]
  retention { restore_points = 28 }
}
