source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a"]
  re_ip {
    from_subnet = "10.1.0.0/16"
    to_subnet   = "10.2.0.0/16"
    gateway     = "10.3.0.1"
    dns         = ["10.2.0.53", "dns1.example.com", "fe80::1%eth0"]
  }
  re_ip {
    from_subnet = "192.168.1.0/24"
    to_subnet   = "192.168.2.0/24"
    gateway     = "192.168.2"
  }
}
