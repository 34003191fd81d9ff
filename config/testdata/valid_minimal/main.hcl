source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "minimal" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["vm1"]
}
