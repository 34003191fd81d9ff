proxy "prod-1" {
  address = "10.1.0.10:7443"
  site    = "prod"
}

traffic_rule "ends" {
  from     = ["prdo", "10.1.0.0/33", "10.1.0.1/16", "site:", "10.1.0.0/16", "10.1.0.0/16"]
  to       = []
  throttle = "20MB/s"
}

traffic_rule "rates" {
  from            = ["*"]
  to              = ["fe80::1%eth0", "dr"]
  throttle        = "0MB/s"
  max_connections = 0
}

traffic_rule "negative" {
  from     = ["*"]
  to       = ["*"]
  throttle = "-5MB/s"
}

traffic_rule "windows" {
  from     = ["*"]
  to       = ["*"]
  throttle = "10MB/s"
  window {
    days      = ["mon-fir", "Thursdya", "weekend"]
    hours     = "8:00-25:00"
    time_zone = "Europe/Pariss"
  }
  window {
    days      = []
    hours     = "06:30-06:30"
    time_zone = "Local"
  }
  window {
    hours = "8am-6pm"
    day   = ["mon"]
  }
}

traffic_rule "no-throttle" {
  from    = ["*"]
  to      = ["*"]
  encrypt = true
  window {
    hours = "08:00-18:00"
  }
}

traffic_rule "idle" {
  from = ["*"]
  to   = ["*"]
}

traffic_rule "ends" {
  from = ["*"]
  to   = ["*"]
}

traffic_rule "missing" {
  throttle = "1MB/s"
}
