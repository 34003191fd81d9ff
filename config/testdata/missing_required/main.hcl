source "local" "prod" {}
target "local" "dr" { path = "./dr" }
source "vsphere" "vc" {
  url      = "https://vc.example.com/sdk"
  username = "admin"
  password = "pw"
  tag {}
}

proxy "p1" {
  site = "prod"
}

job "web" {
  target = target.local.dr
}

job "db" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["db-01"]
  retention {}
  network_map { from = "VM Network" }
  re_ip { to_subnet = "10.2.0.0/16" }
}
