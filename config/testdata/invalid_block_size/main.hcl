source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "not-power-of-two" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a1"]
  transfer { block_size = "12KiB" }
}

job "decimal" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a2"]
  transfer { block_size = "16KB" }
}

job "too-large" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a3"]
  transfer { block_size = "2MiB" }
}

job "too-small" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a4"]
  transfer { block_size = 512 }
}

job "words" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a5"]
  transfer { block_size = "lots" }
}

job "unit" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a6"]
  transfer { block_size = "16 Kib" }
}
