# env() works in the host's blocks as well as in plugin bodies.
source "local" "prod" { path = env("FERRY_TEST_PATH") }
target "local" "dr" { path = "${env("FERRY_TEST_PATH")}/dr" }

job "env" {
  source         = source.local.prod
  target         = target.local.dr
  vms            = [env("FERRY_TEST_USER")]
  replica_suffix = "-${env("FERRY_TEST_USER")}"
}
