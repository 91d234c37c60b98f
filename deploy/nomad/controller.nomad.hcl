# Tessera's controller: projects EVENTS into state, reconciles wanted and running work, and
# launches and reaps instances (here: Nomad dispatches of tessera-instance).
#
#   nomad job run deploy/nomad/controller.nomad.hcl
#
# Exactly one must run: two controllers would both start the same workers.

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "image" {
  type    = string
  default = "tessera:latest"
}

job "tessera-controller" {
  datacenters = var.datacenters
  type        = "service"

  group "controller" {
    count = 1

    # A singleton: min = max = 1 makes Nomad refuse to scale it.
    scaling {
      enabled = false
      min     = 1
      max     = 1
    }

    network {
      port "status" {}
    }

    restart {
      attempts = 5
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    reschedule {
      delay          = "10s"
      delay_function = "exponential"
      max_delay      = "2m"
      unlimited      = true
    }

    # Stop the old one before starting the new one (never two at once).
    update {
      max_parallel = 1
      canary       = 0
    }

    task "controller" {
      driver = "docker"

      kill_signal  = "SIGTERM"
      kill_timeout = "20s"

      config {
        image      = var.image
        entrypoint = ["tessera"]
        args       = ["controller"]
      }

      # A Nomad token for this task (workload identity), for dispatching and stopping the
      # tessera-instance jobs; its policy is in docs/deploy.md.
      identity {
        env = true
      }

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
        JIT_INSTANCE_PROVIDER_CLASS_PATH = "nomad"
        NOMAD_ADDR                       = "http://${attr.unique.network.ip-address}:4646"
        TESSERA_NOMAD_INSTANCE_JOB       = "tessera-instance"
        TESSERA_OWNER_ID                 = "tessera-${NOMAD_NAMESPACE}"
        JIT_INSTANCE_POLL_INTERVAL       = "5"
        JIT_INSTANCE_READY_TIMEOUT       = "120"
        JIT_INSTANCE_MAX_IDLE_TIME       = "600"
        JIT_INSTANCE_MAX_UP_TIME         = "14400"
        TESSERA_SHUTDOWN_TIMEOUT         = "10"
        TESSERA_LOG_FORMAT               = "json"
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
