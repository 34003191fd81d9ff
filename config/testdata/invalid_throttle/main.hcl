source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "unit" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a1"]
  transfer { throttle = "200Mbs" }
}

job "negative" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a2"]
  transfer { throttle = "-5MB/s" }
}

job "words" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a3"]
  transfer { throttle = "fast" }
}

job "no-unit" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a4"]
  transfer { throttle = "1000" }
}

job "tiny" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a5"]
  transfer { throttle = "4bps" }
}
