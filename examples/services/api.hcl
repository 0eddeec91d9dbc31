service {
  name = "api"
  port = 9090
  tags = ["internal"]

  check {
    id       = "api-ttl"
    name     = "api heartbeat"
    ttl      = "30s"
  }
}
