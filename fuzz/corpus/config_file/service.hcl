service {
  name = "web"
  port = 8080
  tags = ["v1", "primary"]
  meta = { version = "v1" }
  check {
    http     = "http://localhost:8080/health"
    interval = "10s"
  }
}
