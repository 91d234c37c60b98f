# A 3-node NATS JetStream cluster for Tessera (streams and buckets use 3 replicas).
#
#   nomad job run deploy/nomad/nats.nomad.hcl
#
# Each node needs a host volume named "tessera-nats" for JetStream's files (docs/deploy.md).
# Clients find it through Nomad's service discovery as the service "tessera-nats"; the
# servers find each other as "tessera-nats-cluster".

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "nats_image" {
  type    = string
  default = "nats:2.10-alpine"
}

job "tessera-nats" {
  datacenters = var.datacenters
  type        = "service"

  group "nats" {
    count = 3

    # One server per machine: losing a machine loses one replica, never the quorum.
    constraint {
      operator = "distinct_hosts"
      value    = "true"
    }

    # The count is the cluster size: keep it at 3 (Nomad honours min/max when scaling).
    scaling {
      enabled = false
      min     = 3
      max     = 3
    }

    network {
      port "client" {
        static = 4222
      }
      port "cluster" {
        static = 6222
      }
      port "monitor" {
        static = 8222
      }
    }

    volume "jetstream" {
      type   = "host"
      source = "tessera-nats"
    }

    service {
      name     = "tessera-nats"
      provider = "nomad"
      port     = "client"

      check {
        type     = "http"
        port     = "monitor"
        path     = "/healthz?js-enabled-only=true"
        interval = "10s"
        timeout  = "2s"
      }
    }

    service {
      name     = "tessera-nats-cluster"
      provider = "nomad"
      port     = "cluster"
    }

    # Restart in place first (the data is on this machine), then move elsewhere.
    restart {
      attempts = 3
      interval = "5m"
      delay    = "15s"
      mode     = "delay"
    }

    reschedule {
      delay          = "30s"
      delay_function = "exponential"
      max_delay      = "10m"
      unlimited      = true
    }

    # One server at a time, so JetStream keeps its quorum during an update.
    update {
      max_parallel     = 1
      min_healthy_time = "30s"
      healthy_deadline = "5m"
    }

    task "nats" {
      driver = "docker"

      # nats-server stops gracefully on SIGTERM; give it time to hand over its streams.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        image = var.nats_image
        ports = ["client", "cluster", "monitor"]
        args  = ["--config", "/local/nats.conf"]
      }

      volume_mount {
        volume      = "jetstream"
        destination = "/data"
      }

      # Routes come from service discovery; a new peer reloads the config (SIGHUP).
      template {
        destination   = "local/nats.conf"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          server_name: tessera-nats-{{ env "NOMAD_ALLOC_INDEX" }}
          listen: 0.0.0.0:4222
          http: 0.0.0.0:8222
          # Tiles larger than 640x360 need more than the 1 MB default (TESSERA_NATS_MAX_PAYLOAD).
          max_payload: 8MB
          jetstream {
            store_dir: /data/jetstream
          }
          cluster {
            name: tessera
            listen: 0.0.0.0:6222
            routes: [
          {{- range nomadService "tessera-nats-cluster" }}
              nats-route://{{ .Address }}:{{ .Port }}
          {{- end }}
            ]
          }
        EOT
      }

      resources {
        cpu    = 1000
        memory = 1024
      }
    }
  }
}
