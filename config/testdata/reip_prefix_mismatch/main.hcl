source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a"]
  re_ip {
    from_subnet = "10.1.0.0/16"
    to_subnet   = "10.2.0.0/24"
  }
  re_ip {
    from_subnet = "10.5.0.0/16"
    to_subnet   = "fd00::/16"
  }
  re_ip {
    from_subnet = "10.1.0.0/16"
    to_subnet   = "10.9.0.0/16"
  }
}
