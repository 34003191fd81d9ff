source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a"]
  transfer { compression = "s2" }
  transfer { compression = "zstd" }
}
