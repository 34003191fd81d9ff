job "web-tier" {
  source     = source.local.prod
  target     = target.local.dr
  repository = repository.local.meta
  vms        = ["web-01", "web-02"]
  proxies    = ["prod-2", "prod-1"]
  schedule   = "every 15m"
  quiesce    = true
  copy_independent_disks = true
  replica_suffix = "-dr"
  retention { restore_points = 14 }
  network_map {
    from = "VM Network"
    to   = "DR Network"
  }
  network_map {
    from = "Backup"
    to   = "DR Backup"
  }
  re_ip {
    from_subnet = "10.1.0.0/16"
    to_subnet   = "10.2.0.0/16"
    gateway     = "10.2.0.1"
    dns         = ["10.2.0.53", "10.2.0.54"]
  }
  re_ip {
    from_subnet = "fd01::/64"
    to_subnet   = "fd02::/64"
  }
  transfer {
    compression = "zstd"
    throttle    = "200Mbps"
    max_tasks   = 2
    block_size  = "16KiB"
  }
  retry {
    attempts = 5
    wait     = "2m30s"
  }
}

job "db" {
  source   = source.vsphere.vc
  target   = target.local.dr
  vms      = ["db-01"]
  schedule = "CRON_TZ=Europe/Berlin 30 2 * * MON-FRI"
  transfer {
    throttle   = "1.5 MiB/s"
    block_size = 65536
  }
  retry { attempts = 1 }
}
