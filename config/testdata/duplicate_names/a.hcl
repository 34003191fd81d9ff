source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }
proxy "p1" { address = "10.0.0.1:7443" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01"]
}
