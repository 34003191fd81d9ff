source "local" "prod" {
  path  = "./prod"
  paht2 = "./typo"
}
target "local" "dr" { path = "./dr" }

proxy "p1" {
  address  = "10.0.0.1:7443"
  maxtasks = 4
}

job "web" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["web-01"]
  schedul  = "every 15m"
  transfer { compresion = "zstd" }
}
