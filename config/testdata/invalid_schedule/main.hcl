source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "minute" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a1"]
  schedule = "61 * * * *"
}

job "short" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a2"]
  schedule = "every 500ms"
}

job "never" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a3"]
  schedule = "0 0 30 2 *"
}

job "zone" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a4"]
  schedule = "CRON_TZ=Mars/Olympus 0 2 * * *"
}

job "fields" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a5"]
  schedule = "0 2 * *"
}

job "names" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a6"]
  schedule = "0 2 * * FUNDAY"
}

job "empty" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a7"]
  schedule = ""
}
