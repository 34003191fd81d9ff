proxy "port-range" { address = "10.0.0.1:99999" }
proxy "no-port" { address = "10.0.0.1" }
proxy "no-host" { address = ":7443" }
proxy "port-zero" { address = "proxy.example.com:0" }
proxy "ipv6" { address = "fd00::1:7443" }
proxy "bad-host" { address = "prod proxy:7443" }
proxy "port-name" { address = "10.0.0.1:https" }
