source "vmware" "prod" { url = "https://vc.example.com" }
source "vspere" "typo" { url = "https://vc.example.com" }
target "local" "dr" { path = "./dr" }
repository "s3" "meta" { bucket = "ferry" }

# Refers to the unknown blocks: nothing more is reported for them.
job "web" {
  source     = source.vmware.prod
  target     = target.local.dr
  repository = repository.s3.meta
  vms        = ["web-01"]
}
