# Names that would climb out of a target's folder or that no target
# accepts are refused at their line.
source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }
job "escape" {
  source         = source.local.prod
  target         = target.local.dr
  vms            = ["web-01", "/Prod/vm/../../etc", "..", "db\u0000-01", "vm:app\n01", "tag:tier/gold\t"]
  exclude        = ["folder:/Prod/vm/old\u0007"]
  replica_suffix = "/../../escape"
}
job "nul" {
  source         = source.local.prod
  target         = target.local.dr
  vms            = ["web-03"]
  replica_suffix = "_replica\u0000"
}
job "dots" {
  source         = source.local.prod
  target         = target.local.dr
  vms            = ["web-05"]
  replica_suffix = "..copy"
}
job "fine" {
  source         = source.local.prod
  target         = target.local.dr
  vms            = ["web-01", "/Prod/vm/web-02", "db:primary"]
  replica_suffix = "-dr.copy"
}
