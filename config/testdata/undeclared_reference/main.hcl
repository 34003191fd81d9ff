source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }
proxy "prod-1" { address = "10.0.0.1:7443" }

job "web" {
  source     = source.local.prd
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["web-01"]
  proxies    = ["prod-2", "dr-1"]
}
