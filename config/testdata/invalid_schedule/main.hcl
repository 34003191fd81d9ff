source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "minute" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a"]
  schedule = "61 * * * *"
}

job "short" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a"]
  schedule = "every 30s"
}

job "never" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a"]
  schedule = "0 0 30 2 *"
}

job "zone" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a"]
  schedule = "CRON_TZ=Mars/Olympus 0 2 * * *"
}

job "fields" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a"]
  schedule = "0 2 * *"
}

job "names" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a"]
  schedule = "0 2 * * FUNDAY"
}

job "empty" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = ["a"]
  schedule = ""
}
