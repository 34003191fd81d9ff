source "local" "prod" { path = "./elsewhere" }
proxy "p1" { address = "10.0.0.2:7443" }

# Same name, another kind: allowed.
target "local" "prod" { path = "./dr2" }

job "web" {
  source = source.local.prod
  target = target.local.prod
  vms    = ["web-02"]
}
