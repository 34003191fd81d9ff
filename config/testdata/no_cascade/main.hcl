# Each block below is broken in itself; the job refers to all of them and
# adds nothing but its own problem.
source "local" "prod" { path = 42 == "x" ? [] : {} }
target "local" "dr" {}
repository "local" "meta" { path = env("FERRY_TEST_UNSET") }
proxy "p1" { address = "nowhere" }

job "web" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  proxies    = ["p1"]
  vms        = ["a", "a"]
}
