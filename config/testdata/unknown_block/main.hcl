source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

jobs "web" {
  vms = ["web-01"]
}

version = 2

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web-01"]
  retension { restore_points = 3 }
}
