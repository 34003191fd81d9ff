source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a1"]
  transfer { compression = "lz4" }
}

job "db" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a2"]
  transfer { compression = "zstdd" }
}
