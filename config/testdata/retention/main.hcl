source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "zero" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a1"]
  retention { restore_points = 0 }
}

job "negative" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a2"]
  retention { restore_points = -1 }
}

job "twice" {
  source = source.local.prod
  target = target.local.dr
  vms    = ["a3"]
  retention { restore_points = 3 }
  retention { restore_points = 4 }
}
