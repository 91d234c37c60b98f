# One elastic Tessera instance per dispatch: what the controller launches with
# --instance-provider nomad (JIT_INSTANCE_PROVIDER_CLASS_PATH=nomad).
#
#   nomad job run deploy/nomad/instance.nomad.hcl     # registers it; nothing runs yet
#
# The controller dispatches it (POST /v1/job/tessera-instance/dispatch) with the instance's
# id, owner, kind and capacities as meta, and stops the dispatched job to terminate it.

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

job "tessera-instance" {
  namespace   = var.namespace
  datacenters = var.datacenters
  type        = "batch"

  # Keep in step with pipeline/instances/nomad.py (dispatch_meta): Nomad refuses a dispatch
  # with a meta key not listed here.
  parameterized {
    payload       = "forbidden"
    meta_required = ["tessera_instance_id", "tessera_owner"]
    meta_optional = [
      "tessera_kind",
      "tessera_capacity_jit",
      "tessera_capacity_grabber",
      "tessera_capacity_stitcher",
    ]
  }

  # Defaults of the optional meta (the provider always sends them all).
  meta {
    tessera_kind              = ""
    tessera_capacity_jit      = "4"
    tessera_capacity_grabber  = "16"
    tessera_capacity_stitcher = "2"
  }

  group "agent" {
    count = 1

    # One dispatch is one instance: the controller decides how many (its placement), so
    # there is no scaling block here.
    network {
      port "status" {}
    }

    # A crashed agent restarts in place twice; after that the job ends and the controller,
    # seeing the instance gone, launches another one.
    restart {
      attempts = 2
      interval = "10m"
      delay    = "10s"
      mode     = "fail"
    }

    # Never rescheduled by Nomad: replacing instances is the controller's job (its ready
    # timeout and heartbeat timeout), and two replacements would race.
    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "agent" {
      driver = "docker"

      # Longer than TESSERA_SHUTDOWN_TIMEOUT, so the agent stops its workers before SIGKILL.
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
          {{ with nomadVar "nomad/jobs/tessera-instance" }}{{ .users.Value }}{{ end }}
        EOT
      }

      env {
        TESSERA_NATS_USERS        = "${NOMAD_SECRETS_DIR}/nats-users.json"
        TESSERA_INSTANCE_ID       = "${NOMAD_META_tessera_instance_id}"
        TESSERA_CAPACITY_JIT      = "${NOMAD_META_tessera_capacity_jit}"
        TESSERA_CAPACITY_GRABBER  = "${NOMAD_META_tessera_capacity_grabber}"
        TESSERA_CAPACITY_STITCHER = "${NOMAD_META_tessera_capacity_stitcher}"
        JIT_INSTANCE_AGENT_HOST   = "0.0.0.0"
        JIT_INSTANCE_AGENT_PORT   = "${NOMAD_PORT_status}"
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
