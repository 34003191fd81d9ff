source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "zero" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a1"]
  retry { attempts = 0 }
}

job "negative" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a2"]
  retry {
    attempts = -2
    wait     = "-5m"
  }
}

job "words" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a3"]
  retry { wait = "ten minutes" }
}

job "no-unit" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a4"]
  retry { wait = 600 }
}

job "twice" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a5"]
  retry { attempts = 2 }
  retry { attempts = 4 }
}

job "fraction" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a6"]
  retry {
    attempts = 2.5
    interval = "1m"
  }
}
