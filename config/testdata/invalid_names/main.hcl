source "local" "my prod" { path = "./prod" }
target "local" "1dr" { path = "./dr" }
proxy "proxy.one" { address = "10.0.0.1:7443" }
job "web tier" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a"]
}
