source "local" "prod" { path = env("FERRY_TEST_UNSET") }
target "local" "dr" { path = "./dr" }

job "web" {
  source   = source.local.prod
  target   = target.local.dr
  vms      = [env("FERRY_TEST_UNSET")]
  schedule = env("")
}
