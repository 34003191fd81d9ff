source "local" "prod" { path = ["./prod"] }
target "local" "dr" { path = "./dr" }
source "vsphere" "vc" {
  url      = "https://vc.example.com/sdk"
  username = "admin"
  password = "pw"
  insecure = "perhaps"
}

proxy "p1" {
  address   = 7443
  max_tasks = "four"
}

job "web" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = "web-01"
  quiesce  = "maybe"
  schedule = 15
  retention { restore_points = 2.5 }
  transfer { max_tasks = {} }
}

job "db" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["db-01", 2, ["nested"]]
}
