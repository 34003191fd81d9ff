proxy "prod-1" {
  address = "10.1.0.10:7443"
  site    = "prod"
}

proxy "dr-1" {
  address = "10.2.0.10:7443"
  site    = "dr"
}

# The WAN between the sites: 20 MB/s in office hours, Paris time.
traffic_rule "wan" {
  from            = ["site:prod", "10.1.0.0/16"]
  to              = ["site:dr"]
  bidirectional   = true
  throttle        = "20MB/s"
  encrypt         = true
  max_connections = 4

  window {
    days      = ["mon-fri"]
    hours     = "08:00-18:00"
    time_zone = "Europe/Paris"
  }
  window {
    days  = ["Saturday", "sun"]
    hours = "22:00-06:00"
  }
}

traffic_rule "backup-lan" {
  from     = ["fd00:1::/48", "192.0.2.7"]
  to       = ["*"]
  throttle = "200Mbps"
}

traffic_rule "branch" {
  from            = ["site:branch office"]
  to              = ["2001:db8::1"]
  max_connections = 1
  window {
    hours = "00:00-24:00"
  }
  throttle = "1MiB/s"
}
