# source.local.prod may be declared in the broken file: no noise about it.
target "local" "dr" { path = "./dr" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01"]
  proxies = ["prod-1"]
}
