source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "kind" {
  source = source.local.prod
  target = source.local.prod
  vms    = ["a"]
}

job "quoted" {
  source = "source.local.prod"
  target = target.local.dr
  vms    = ["a"]
}

job "short" {
  source = source.local
  target = local.dr
  vms    = ["a"]
}

job "expression" {
  source = source.local.prod
  target = target.local["dr"]
  repository = 42
  vms    = ["a"]
}
