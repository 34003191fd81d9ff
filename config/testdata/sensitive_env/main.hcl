# The password comes from the environment; whatever goes wrong around it,
# its value must not be printed.
source "vsphere" "vc" {
  url      = "https://vc.example.com/sdk"
  username = env("FERRY_TEST_USER")
  password = env("FERRY_TEST_PASSWORD") == "" ? 1 : env("FERRY_TEST_PASSWORD") + 1
  insecure = env("FERRY_TEST_PASSWORD")
  tag {
    key   = "owner"
    value = [env("FERRY_TEST_PASSWORD")]
  }
}
