source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a"]
  network_map {
    from = "VM Network"
    to   = "DR Network"
  }
  network_map {
    from = "VM Network"
    to   = "Other Network"
  }
  network_map {
    from = ""
    to   = "DR Network"
  }
}
