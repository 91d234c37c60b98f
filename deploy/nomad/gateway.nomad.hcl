# Tessera's HTTP gateway: /create, /play, /session, viewer pages, /healthz.
#
#   nomad job run deploy/nomad/gateway.nomad.hcl
#
# Stateless (it reads projected state from JetStream), so it scales freely.

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "image" {
  type    = string
  default = "tessera:latest"
}

job "tessera-gateway" {
  datacenters = var.datacenters
  type        = "service"

  group "gateway" {
    count = 2

    scaling {
      enabled = true
      min     = 1
      max     = 10
    }

    network {
      port "http" {
        to = 8080
      }
    }

    service {
      name     = "tessera-gateway"
      provider = "nomad"
      port     = "http"

      check {
        type     = "http"
        path     = "/readyz"
        interval = "10s"
        timeout  = "2s"
      }
    }

    restart {
      attempts = 3
      interval = "5m"
      delay    = "10s"
      mode     = "delay"
    }

    reschedule {
      delay          = "15s"
      delay_function = "exponential"
      max_delay      = "5m"
      unlimited      = true
    }

    update {
      max_parallel     = 1
      min_healthy_time = "10s"
      healthy_deadline = "3m"
      auto_revert      = true
    }

    task "gateway" {
      driver = "docker"

      # Out of the service catalogue first, then SIGTERM; Tessera stops within
      # TESSERA_SHUTDOWN_TIMEOUT, Nomad's SIGKILL comes only after kill_timeout.
      shutdown_delay = "5s"
      kill_signal    = "SIGTERM"
      kill_timeout   = "20s"

      config {
        image      = var.image
        entrypoint = ["tessera"]
        args       = ["gateway"]
        ports      = ["http"]
      }

      # NATS_URL from Nomad service discovery. One server is enough: the client learns the
      # rest of the cluster from it. A running gateway keeps its connection when the list
      # changes (noop); a restarted one picks a current server.
      template {
        destination = "local/nats.env"
        env         = true
        change_mode = "noop"
        data        = <<-EOT
          {{- range $i, $s := nomadService "tessera-nats" }}{{ if eq $i 0 }}
          NATS_URL=nats://{{ $s.Address }}:{{ $s.Port }}
          {{- end }}{{ end }}
        EOT
      }

      env {
        JIT_ORCHESTRATOR_HOST    = "0.0.0.0"
        JIT_ORCHESTRATOR_PORT    = "8080"
        TESSERA_PUBLIC           = "1"
        TESSERA_SHUTDOWN_TIMEOUT = "10"
        TESSERA_LOG_FORMAT       = "json"
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
