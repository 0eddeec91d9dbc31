datacenter = "dc1"
node_name  = "node1"
server     = true
ports {
  http = 8500
}
# a comment
checks = [
  { name = "disk", args = ["/bin/true"], interval = "30s" },
]
