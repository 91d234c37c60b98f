# Grabber pool: pulls sources into tile frames (light: many per agent).
#
#   nomad job run deploy/nomad/grabber.nomad.hcl
#
# A pool of agents that run grabbers only (TESSERA_CAPACITY_GRABBER=16, other kinds 0).
# The controller places grabber workers on them like on any instance; the pool's size
# is its scaling block's business: the Nomad Autoscaler, the UI, or
# POST /v1/job/tessera-grabber/scale (what NomadProvider.scale() sends).

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

job "tessera-grabber" {
  namespace   = var.namespace
  datacenters = var.datacenters
  type        = "service"

  group "grabber" {
    count = 1

    scaling {
      enabled = true
      min     = 0
      max     = 20
    }

    network {
      port "status" {}
    }

    service {
      name     = "tessera-grabber"
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
      attempts = 3
      interval = "5m"
      delay    = "10s"
      mode     = "delay"
    }

    # A lost allocation comes back elsewhere; its workers are placed again by the controller.
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
    }

    task "agent" {
      driver = "docker"

      # Longer than TESSERA_SHUTDOWN_TIMEOUT: the agent stops its workers before SIGKILL.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        image        = var.image
        entrypoint   = ["tessera"]
        args         = ["agent"]
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
          {{ with nomadVar "nomad/jobs/tessera-grabber" }}{{ .users.Value }}{{ end }}
        EOT
      }

      env {
        TESSERA_NATS_USERS        = "${NOMAD_SECRETS_DIR}/nats-users.json"
        TESSERA_INSTANCE_ID       = "grabber-${NOMAD_ALLOC_ID}"
        JIT_INSTANCE_AGENT_HOST   = "0.0.0.0"
        JIT_INSTANCE_AGENT_PORT   = "${NOMAD_PORT_status}"
        TESSERA_CAPACITY_JIT      = "0"
        TESSERA_CAPACITY_GRABBER  = "16"
        TESSERA_CAPACITY_STITCHER = "0"
        TESSERA_SHUTDOWN_TIMEOUT  = "10"
        TESSERA_LOG_FORMAT        = "json"
      }

      resources {
        cpu    = 4000
        memory = 2048
      }
    }
  }
}
