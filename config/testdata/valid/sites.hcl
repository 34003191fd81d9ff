# Sites and stores, in a file of their own: blocks of one configuration may
# be spread over files.
source "local" "prod" { path = "./sites/prod" }

target "local" "dr" { path = "./sites/dr" }

source "vsphere" "vc" {
  url      = "https://vc-prod.example.com/sdk"
  username = env("FERRY_TEST_USER")
  password = env("FERRY_TEST_PASSWORD")
  insecure = true
  placement { datacenter = "DC1" }
  tag {
    key   = "owner"
    value = env("FERRY_TEST_PASSWORD")
  }
  tag { key = "tier" }
}

repository "local" "meta" { path = env("FERRY_TEST_PATH") }

proxy "prod-1" {
  address   = "10.0.0.10:7443"
  site      = "prod"
  max_tasks = 4
}

proxy "prod-2" {
  address = "proxy2.prod.example.com:7443"
  site    = "prod"
}

proxy "dr_1" { address = "[fd00::10]:7443" }
