source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a"]
  re_ip {
    from_subnet = "10.1.0.0/33"
    to_subnet   = "banana"
  }
  re_ip {
    from_subnet = "10.1.0.5/16"
    to_subnet   = "10.2.0.0/16"
  }
  re_ip {
    from_subnet = "10.3.0.0"
    to_subnet   = "10.4.0.0/16"
  }
}
