# A source that reports neither folders nor tags cannot serve selectors.
source "hyperv" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "web" {
  source  = source.hyperv.prod
  target  = target.local.dr
  vms     = ["web-01", "folder:/Prod/web", "tag:tier/gold"]
  exclude = ["tag:no-dr"]
}
