source "local" "prod" { path = "./prod" }
source "local" "shop" { path = "./shop" }
target "local" "dr" { path = "./dr" }
target "local" "dr2" { path = "./dr2" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["web", "/DC/vm/db", "app"]
}

# Meets job "web" twice on target dr: "web" and "db" (given as a path).
job "shop" {
  source = source.local.shop
  target = target.local.dr
  vms    = ["web", "db", "cart"]
}

# Another suffix, or another target: no conflict.
job "shop2" {
  source         = source.local.shop
  target         = target.local.dr
  replica_suffix = "_shop"
  vms            = ["web"]
}

job "shop3" {
  source = source.local.shop
  target = target.local.dr2
  vms    = ["web"]
}
