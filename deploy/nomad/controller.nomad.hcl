# Tessera's controller (`tessera controller`): projects EVENTS into state, reconciles wanted
# and running work, places it on the agents, and launches and reaps instances (with the
# provider nomad: dispatches of tessera-instance). No HTTP: that is tessera-gateway.
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

# nomad: the agents that run (the system job tessera-agent), plus tessera-instance dispatches
# when they are full; agents: only the agents that run, nothing dispatched.
variable "instance_provider" {
  type    = string
  default = "nomad"
}

variable "namespace" {
  type    = string
  default = "default"
}

job "tessera-controller" {
  namespace   = var.namespace
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
          {{ with nomadVar "nomad/jobs/tessera-controller" }}{{ .users.Value }}{{ end }}
        EOT
      }

      env {
        TESSERA_NATS_USERS               = "${NOMAD_SECRETS_DIR}/nats-users.json"
        JIT_INSTANCE_PROVIDER_CLASS_PATH = var.instance_provider
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
