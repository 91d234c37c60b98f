# Tessera's HTTP gateway (`tessera gateway`): /create, /play, /session, viewer pages,
# /healthz; /readyz once the controller's projector says it has caught up.
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

variable "namespace" {
  type    = string
  default = "default"
}

job "tessera-gateway" {
  namespace   = var.namespace
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
          {{ with nomadVar "nomad/jobs/tessera-gateway" }}{{ .users.Value }}{{ end }}
        EOT
      }

      # The API token of POST /session and the admin API (TESSERA_API_TOKEN): the same in
      # every gateway of the cluster, from this job's Nomad Variable.
      template {
        destination = "secrets/gateway.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          TESSERA_API_TOKEN={{ with nomadVar "nomad/jobs/tessera-gateway" }}{{ .api_token.Value }}{{ end }}
        EOT
      }

      env {
        TESSERA_NATS_USERS       = "${NOMAD_SECRETS_DIR}/nats-users.json"
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
