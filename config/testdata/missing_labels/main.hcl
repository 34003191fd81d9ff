source "local" {
  path = "./prod"
}
target { path = "./dr" }
proxy {
  address = "10.0.0.1:7443"
}
job "web" "extra" {
  vms = ["a"]
}
