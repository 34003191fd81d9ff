source "local" "prod" { path = "./prod" }
target "local" "dr" { path = "./dr" }

job "web" {
  source = source.local.prod
  target = target.local.dr
  vms = [
    "folder:",
    "folder:Prod/vm/web",
    "folder:/Prod//web",
    "folder:/Prod/vm/../web",
    "tag:",
    "tag:/gold",
    "tag:tier/",
    "tag: gold",
    "Folder:/Prod/vm",
    "fodler:/Prod/vm",
    "tags:gold",
    "vm:",
    "tag:tier/gold",
    "tag:tier/gold",
    "web-01",
  ]
  exclude = ["web-01", "tag:tier/gold", "", "web-02", "web-02"]
}
