source "local" "prod" {
  path = "./prod"

job "in-broken-file" {
  vms = ["x"
}
