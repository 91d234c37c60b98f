# A Tessera agent on every client node (a system job): each node is an instance whose
# workers the controller places by capacity. Nodes join and leave with the cluster.
#
#   nomad job run deploy/nomad/agent.nomad.hcl
#
# System jobs cannot have scaling or reschedule blocks: Nomad runs exactly one per eligible
# node and replaces it on that node. Capacity is per node and kind (TESSERA_CAPACITY_*).

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "image" {
  type    = string
  default = "tessera:latest"
}

variable "namespace" {
  type    = string
  default = "default"
}

job "tessera-agent" {
  namespace   = var.namespace
  datacenters = var.datacenters
  type        = "system"

  group "agent" {
    network {
      port "status" {
        static = 8081
      }
    }

    service {
      name     = "tessera-agent"
      provider = "nomad"
      port     = "status"

      check {
        type     = "http"
        path     = "/status"
        interval = "15s"
        timeout  = "2s"
      }
    }

    restart {
      attempts = 10
      interval = "10m"
      delay    = "10s"
      mode     = "delay"
    }

    update {
      max_parallel     = 1
      min_healthy_time = "10s"
      healthy_deadline = "3m"
    }

    task "agent" {
      driver = "docker"

      # The agent stops its workers (each within TESSERA_SHUTDOWN_TIMEOUT / 3), then itself.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        image        = var.image
        entrypoint   = ["tessera"]
        args         = ["agent"]
        # WebRTC needs the node's UDP ports (JIT_CONTAINER_PORT_MIN/MAX) reachable directly.
        network_mode = "host"
      }

      # NATS_URL: every server of the cluster, from Nomad's service discovery (the client
      # fails over between them). A running process keeps its connection when the list
      # changes (noop); a restarted one takes the current list.
      template {
        destination = "local/nats.env"
        env         = true
        change_mode = "noop"
        data        = <<-EOT
          NATS_URL={{ range $i, $s := nomadService "tessera-nats" }}{{ if $i }},{{ end }}nats://{{ $s.Address }}:{{ $s.Port }}{{ end }}
        EOT
      }

      # The NATS passwords of the roles this job connects as (TESSERA_NATS_USERS), from the
      # Nomad Variable only this job reads (tessera deploy nomad writes it).
      template {
        destination = "secrets/nats-users.json"
        change_mode = "restart"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs/tessera-agent" }}{{ .users.Value }}{{ end }}
        EOT
      }

      env {
        TESSERA_NATS_USERS        = "${NOMAD_SECRETS_DIR}/nats-users.json"
        TESSERA_INSTANCE_ID       = "node-${node.unique.id}"
        JIT_INSTANCE_AGENT_HOST   = "0.0.0.0"
        JIT_INSTANCE_AGENT_PORT   = "${NOMAD_PORT_status}"
        TESSERA_CAPACITY_JIT      = "4"
        TESSERA_CAPACITY_GRABBER  = "16"
        TESSERA_CAPACITY_STITCHER = "2"
        JIT_CONTAINER_PORT_MIN    = "49152"
        JIT_CONTAINER_PORT_MAX    = "65535"
        TESSERA_SHUTDOWN_TIMEOUT  = "10"
        TESSERA_LOG_FORMAT        = "json"
      }

      resources {
        cpu    = 4000
        memory = 4096
      }
    }
  }
}
