source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "empty" {
  source = source.local.prod
  target = target.local.dr
  vms    = []
}
