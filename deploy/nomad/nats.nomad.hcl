# A 3-node NATS JetStream cluster for Tessera (streams and buckets use 3 replicas).
#
#   nomad job run deploy/nomad/nats.nomad.hcl
#
# Each node needs a host volume named "tessera-nats" for JetStream's files (docs/deploy.md).
# Clients find it through Nomad's service discovery as the service "tessera-nats"; the
# servers find each other as "tessera-nats-cluster". The users (one per Tessera role) and the
# route password are in the Nomad Variable nomad/jobs/tessera-nats, which `tessera deploy
# nomad` writes: put it before running this job (its template waits for it).

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "nats_image" {
  type    = string
  default = "nats:2.10-alpine"
}

variable "namespace" {
  type    = string
  default = "default"
}

job "tessera-nats" {
  namespace   = var.namespace
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
        # As Tessera starts its own servers (EmbeddedNats): client address and port as flags.
        args = ["-c", "/secrets/nats.conf", "-a", "0.0.0.0", "-p", "4222"]
      }

      volume_mount {
        volume      = "jetstream"
        destination = "/data"
      }

      # The config Tessera runs every nats-server with (pipeline/nats/server.py render_config:
      # its users and their permissions, JetStream synced to disk, authenticated routes; a
      # test renders both and compares them). Passwords come from this job's Nomad Variable,
      # routes from service discovery; a new peer or password reloads it (SIGHUP).
      template {
        destination   = "secrets/nats.conf"
        change_mode   = "signal"
        change_signal = "SIGHUP"
        data          = <<-EOT
          {{ with nomadVar "nomad/jobs/tessera-nats" }}{{ $users := .users.Value | parseJSON }}{{ $route := .route.Value -}}
          max_payload: 8388608
          jetstream {
            store_dir: "/data/jetstream"
            sync_interval: always
          }
          server_name: "tessera-nats-{{ env "NOMAD_ALLOC_INDEX" }}"
          client_advertise: "{{ env "NOMAD_HOST_ADDR_client" }}"
          cluster {
            name: "tessera"
            listen: "0.0.0.0:6222"
            advertise: "{{ env "NOMAD_HOST_ADDR_cluster" }}"
            authorization {
              user: "route"
              password: {{ $route | toJSON }}
            }
            routes: [
          {{- range nomadService "tessera-nats-cluster" }}
              "nats-route://route:{{ $route }}@{{ .Address }}:{{ .Port }}"
          {{- end }}
            ]
          }
          authorization {
            users = [
              {user: "admin", password: {{ index $users "admin" | toJSON }}, permissions: {publish: {allow: [">"]}, subscribe: {allow: [">"]}, allow_responses: true}}
              {user: "controller", password: {{ index $users "controller" | toJSON }}, permissions: {publish: {allow: ["$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>", "events.>", "parked.>", "hb.service.>", "ctl.agent.>", "ctl.worker.*"]}, subscribe: {allow: ["_INBOX.controller.>", "hb.>"]}}}
              {user: "gateway", password: {{ index $users "gateway" | toJSON }}, permissions: {publish: {allow: ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "events.mosaic.*", "events.session.*", "hb.viewer.>", "hb.service.gateway.*", "ctl.signal.*", "ctl.session.*", "$KV.slots.>", "$JS.API.STREAM.INFO.*", "$JS.API.STREAM.INFO.EVENTS", "$JS.API.STREAM.MSG.GET.EVENTS", "$JS.API.DIRECT.GET.EVENTS", "$JS.API.DIRECT.GET.EVENTS.>", "$JS.API.CONSUMER.CREATE.EVENTS", "$JS.API.CONSUMER.CREATE.EVENTS.>", "$JS.API.CONSUMER.INFO.EVENTS.>", "$JS.API.CONSUMER.DELETE.EVENTS.>", "$JS.API.CONSUMER.MSG.NEXT.EVENTS.>", "$JS.ACK.EVENTS.>", "$JS.FC.EVENTS.>", "$JS.API.STREAM.INFO.HEARTBEATS", "$JS.API.STREAM.MSG.GET.HEARTBEATS", "$JS.API.DIRECT.GET.HEARTBEATS", "$JS.API.DIRECT.GET.HEARTBEATS.>", "$JS.API.CONSUMER.CREATE.HEARTBEATS", "$JS.API.CONSUMER.CREATE.HEARTBEATS.>", "$JS.API.CONSUMER.INFO.HEARTBEATS.>", "$JS.API.CONSUMER.DELETE.HEARTBEATS.>", "$JS.API.CONSUMER.MSG.NEXT.HEARTBEATS.>", "$JS.ACK.HEARTBEATS.>", "$JS.FC.HEARTBEATS.>", "$JS.API.STREAM.INFO.SEGMENTS", "$JS.API.STREAM.MSG.GET.SEGMENTS", "$JS.API.DIRECT.GET.SEGMENTS", "$JS.API.DIRECT.GET.SEGMENTS.>", "$JS.API.CONSUMER.CREATE.SEGMENTS", "$JS.API.CONSUMER.CREATE.SEGMENTS.>", "$JS.API.CONSUMER.INFO.SEGMENTS.>", "$JS.API.CONSUMER.DELETE.SEGMENTS.>", "$JS.API.CONSUMER.MSG.NEXT.SEGMENTS.>", "$JS.ACK.SEGMENTS.>", "$JS.FC.SEGMENTS.>", "$JS.API.STREAM.INFO.PARTS", "$JS.API.STREAM.MSG.GET.PARTS", "$JS.API.DIRECT.GET.PARTS", "$JS.API.DIRECT.GET.PARTS.>", "$JS.API.CONSUMER.CREATE.PARTS", "$JS.API.CONSUMER.CREATE.PARTS.>", "$JS.API.CONSUMER.INFO.PARTS.>", "$JS.API.CONSUMER.DELETE.PARTS.>", "$JS.API.CONSUMER.MSG.NEXT.PARTS.>", "$JS.ACK.PARTS.>", "$JS.FC.PARTS.>", "ctl.mosaic.*", "$JS.API.STREAM.INFO.KV_manifests", "$JS.API.STREAM.MSG.GET.KV_manifests", "$JS.API.DIRECT.GET.KV_manifests", "$JS.API.DIRECT.GET.KV_manifests.>", "$JS.API.CONSUMER.CREATE.KV_manifests", "$JS.API.CONSUMER.CREATE.KV_manifests.>", "$JS.API.CONSUMER.INFO.KV_manifests.>", "$JS.API.CONSUMER.DELETE.KV_manifests.>", "$JS.API.CONSUMER.MSG.NEXT.KV_manifests.>", "$JS.ACK.KV_manifests.>", "$JS.FC.KV_manifests.>", "$JS.API.STREAM.INFO.KV_mosaics", "$JS.API.STREAM.MSG.GET.KV_mosaics", "$JS.API.DIRECT.GET.KV_mosaics", "$JS.API.DIRECT.GET.KV_mosaics.>", "$JS.API.CONSUMER.CREATE.KV_mosaics", "$JS.API.CONSUMER.CREATE.KV_mosaics.>", "$JS.API.CONSUMER.INFO.KV_mosaics.>", "$JS.API.CONSUMER.DELETE.KV_mosaics.>", "$JS.API.CONSUMER.MSG.NEXT.KV_mosaics.>", "$JS.ACK.KV_mosaics.>", "$JS.FC.KV_mosaics.>", "$JS.API.STREAM.INFO.KV_alarms", "$JS.API.STREAM.MSG.GET.KV_alarms", "$JS.API.DIRECT.GET.KV_alarms", "$JS.API.DIRECT.GET.KV_alarms.>", "$JS.API.CONSUMER.CREATE.KV_alarms", "$JS.API.CONSUMER.CREATE.KV_alarms.>", "$JS.API.CONSUMER.INFO.KV_alarms.>", "$JS.API.CONSUMER.DELETE.KV_alarms.>", "$JS.API.CONSUMER.MSG.NEXT.KV_alarms.>", "$JS.ACK.KV_alarms.>", "$JS.FC.KV_alarms.>", "$JS.API.STREAM.INFO.KV_sessions", "$JS.API.STREAM.MSG.GET.KV_sessions", "$JS.API.DIRECT.GET.KV_sessions", "$JS.API.DIRECT.GET.KV_sessions.>", "$JS.API.CONSUMER.CREATE.KV_sessions", "$JS.API.CONSUMER.CREATE.KV_sessions.>", "$JS.API.CONSUMER.INFO.KV_sessions.>", "$JS.API.CONSUMER.DELETE.KV_sessions.>", "$JS.API.CONSUMER.MSG.NEXT.KV_sessions.>", "$JS.ACK.KV_sessions.>", "$JS.FC.KV_sessions.>", "$JS.API.STREAM.INFO.KV_instances", "$JS.API.STREAM.MSG.GET.KV_instances", "$JS.API.DIRECT.GET.KV_instances", "$JS.API.DIRECT.GET.KV_instances.>", "$JS.API.CONSUMER.CREATE.KV_instances", "$JS.API.CONSUMER.CREATE.KV_instances.>", "$JS.API.CONSUMER.INFO.KV_instances.>", "$JS.API.CONSUMER.DELETE.KV_instances.>", "$JS.API.CONSUMER.MSG.NEXT.KV_instances.>", "$JS.ACK.KV_instances.>", "$JS.FC.KV_instances.>", "$JS.API.STREAM.INFO.KV_workers", "$JS.API.STREAM.MSG.GET.KV_workers", "$JS.API.DIRECT.GET.KV_workers", "$JS.API.DIRECT.GET.KV_workers.>", "$JS.API.CONSUMER.CREATE.KV_workers", "$JS.API.CONSUMER.CREATE.KV_workers.>", "$JS.API.CONSUMER.INFO.KV_workers.>", "$JS.API.CONSUMER.DELETE.KV_workers.>", "$JS.API.CONSUMER.MSG.NEXT.KV_workers.>", "$JS.ACK.KV_workers.>", "$JS.FC.KV_workers.>", "$JS.API.STREAM.INFO.KV_slots", "$JS.API.STREAM.MSG.GET.KV_slots", "$JS.API.DIRECT.GET.KV_slots", "$JS.API.DIRECT.GET.KV_slots.>", "$JS.API.CONSUMER.CREATE.KV_slots", "$JS.API.CONSUMER.CREATE.KV_slots.>", "$JS.API.CONSUMER.INFO.KV_slots.>", "$JS.API.CONSUMER.DELETE.KV_slots.>", "$JS.API.CONSUMER.MSG.NEXT.KV_slots.>", "$JS.ACK.KV_slots.>", "$JS.FC.KV_slots.>", "$JS.API.STREAM.INFO.KV_tokens", "$JS.API.STREAM.MSG.GET.KV_tokens", "$JS.API.DIRECT.GET.KV_tokens", "$JS.API.DIRECT.GET.KV_tokens.>", "$JS.API.CONSUMER.CREATE.KV_tokens", "$JS.API.CONSUMER.CREATE.KV_tokens.>", "$JS.API.CONSUMER.INFO.KV_tokens.>", "$JS.API.CONSUMER.DELETE.KV_tokens.>", "$JS.API.CONSUMER.MSG.NEXT.KV_tokens.>", "$JS.ACK.KV_tokens.>", "$JS.FC.KV_tokens.>", "$JS.API.STREAM.INFO.KV_revoked", "$JS.API.STREAM.MSG.GET.KV_revoked", "$JS.API.DIRECT.GET.KV_revoked", "$JS.API.DIRECT.GET.KV_revoked.>", "$JS.API.CONSUMER.CREATE.KV_revoked", "$JS.API.CONSUMER.CREATE.KV_revoked.>", "$JS.API.CONSUMER.INFO.KV_revoked.>", "$JS.API.CONSUMER.DELETE.KV_revoked.>", "$JS.API.CONSUMER.MSG.NEXT.KV_revoked.>", "$JS.ACK.KV_revoked.>", "$JS.FC.KV_revoked.>", "$KV.revoked.>", "audit.*", "$JS.API.STREAM.INFO.AUDIT", "$JS.API.STREAM.MSG.GET.AUDIT", "$JS.API.DIRECT.GET.AUDIT", "$JS.API.DIRECT.GET.AUDIT.>", "$JS.API.CONSUMER.CREATE.AUDIT", "$JS.API.CONSUMER.CREATE.AUDIT.>", "$JS.API.CONSUMER.INFO.AUDIT.>", "$JS.API.CONSUMER.DELETE.AUDIT.>", "$JS.API.CONSUMER.MSG.NEXT.AUDIT.>", "$JS.ACK.AUDIT.>", "$JS.FC.AUDIT.>", "$JS.API.STREAM.INFO.OBJ_segments", "$JS.API.STREAM.MSG.GET.OBJ_segments", "$JS.API.DIRECT.GET.OBJ_segments", "$JS.API.DIRECT.GET.OBJ_segments.>", "$JS.API.CONSUMER.CREATE.OBJ_segments", "$JS.API.CONSUMER.CREATE.OBJ_segments.>", "$JS.API.CONSUMER.INFO.OBJ_segments.>", "$JS.API.CONSUMER.DELETE.OBJ_segments.>", "$JS.API.CONSUMER.MSG.NEXT.OBJ_segments.>", "$JS.ACK.OBJ_segments.>", "$JS.FC.OBJ_segments.>"]}, subscribe: {allow: ["_INBOX.gateway.>", "hb.>"]}}}
              {user: "grabber", password: {{ index $users "grabber" | toJSON }}, permissions: {publish: {allow: ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "frames.*", "levels.*", "audio.*", "hb.worker.*", "events.source.*", "$JS.API.STREAM.INFO.KV_alarms", "$JS.API.STREAM.MSG.GET.KV_alarms", "$JS.API.DIRECT.GET.KV_alarms", "$JS.API.DIRECT.GET.KV_alarms.>", "$JS.API.CONSUMER.CREATE.KV_alarms", "$JS.API.CONSUMER.CREATE.KV_alarms.>", "$JS.API.CONSUMER.INFO.KV_alarms.>", "$JS.API.CONSUMER.DELETE.KV_alarms.>", "$JS.API.CONSUMER.MSG.NEXT.KV_alarms.>", "$JS.ACK.KV_alarms.>", "$JS.FC.KV_alarms.>"]}, subscribe: {allow: ["_INBOX.grabber.>", "ctl.audio.*", "ctl.worker.*"]}, allow_responses: true}}
              {user: "stitcher", password: {{ index $users "stitcher" | toJSON }}, permissions: {publish: {allow: ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "segments.*", "parts.*.*", "$JS.API.STREAM.INFO.PARTS", "hb.worker.*", "hb.viewer.mosaic.*", "ctl.audio.*", "$KV.manifests.>", "$JS.API.STREAM.INFO.KV_manifests", "$JS.API.STREAM.MSG.GET.KV_manifests", "$JS.API.DIRECT.GET.KV_manifests", "$JS.API.DIRECT.GET.KV_manifests.>", "$JS.API.CONSUMER.CREATE.KV_manifests", "$JS.API.CONSUMER.CREATE.KV_manifests.>", "$JS.API.CONSUMER.INFO.KV_manifests.>", "$JS.API.CONSUMER.DELETE.KV_manifests.>", "$JS.API.CONSUMER.MSG.NEXT.KV_manifests.>", "$JS.ACK.KV_manifests.>", "$JS.FC.KV_manifests.>", "$JS.API.STREAM.INFO.KV_mosaics", "$JS.API.STREAM.MSG.GET.KV_mosaics", "$JS.API.DIRECT.GET.KV_mosaics", "$JS.API.DIRECT.GET.KV_mosaics.>", "$JS.API.CONSUMER.CREATE.KV_mosaics", "$JS.API.CONSUMER.CREATE.KV_mosaics.>", "$JS.API.CONSUMER.INFO.KV_mosaics.>", "$JS.API.CONSUMER.DELETE.KV_mosaics.>", "$JS.API.CONSUMER.MSG.NEXT.KV_mosaics.>", "$JS.ACK.KV_mosaics.>", "$JS.FC.KV_mosaics.>", "$JS.API.STREAM.INFO.KV_alarms", "$JS.API.STREAM.MSG.GET.KV_alarms", "$JS.API.DIRECT.GET.KV_alarms", "$JS.API.DIRECT.GET.KV_alarms.>", "$JS.API.CONSUMER.CREATE.KV_alarms", "$JS.API.CONSUMER.CREATE.KV_alarms.>", "$JS.API.CONSUMER.INFO.KV_alarms.>", "$JS.API.CONSUMER.DELETE.KV_alarms.>", "$JS.API.CONSUMER.MSG.NEXT.KV_alarms.>", "$JS.ACK.KV_alarms.>", "$JS.FC.KV_alarms.>", "$JS.API.STREAM.INFO.FRAMES", "$JS.API.STREAM.MSG.GET.FRAMES", "$JS.API.DIRECT.GET.FRAMES", "$JS.API.DIRECT.GET.FRAMES.>", "$JS.API.CONSUMER.CREATE.FRAMES", "$JS.API.CONSUMER.CREATE.FRAMES.>", "$JS.API.CONSUMER.INFO.FRAMES.>", "$JS.API.CONSUMER.DELETE.FRAMES.>", "$JS.API.CONSUMER.MSG.NEXT.FRAMES.>", "$JS.ACK.FRAMES.>", "$JS.FC.FRAMES.>", "$JS.API.STREAM.INFO.OBJ_segments", "$JS.API.STREAM.MSG.GET.OBJ_segments", "$JS.API.DIRECT.GET.OBJ_segments", "$JS.API.DIRECT.GET.OBJ_segments.>", "$JS.API.CONSUMER.CREATE.OBJ_segments", "$JS.API.CONSUMER.CREATE.OBJ_segments.>", "$JS.API.CONSUMER.INFO.OBJ_segments.>", "$JS.API.CONSUMER.DELETE.OBJ_segments.>", "$JS.API.CONSUMER.MSG.NEXT.OBJ_segments.>", "$JS.ACK.OBJ_segments.>", "$JS.FC.OBJ_segments.>", "$O.segments.>", "$JS.API.STREAM.PURGE.OBJ_segments"]}, subscribe: {allow: ["_INBOX.stitcher.>", "frames.*", "levels.*", "audio.*", "ctl.mosaic.*"]}, allow_responses: true}}
              {user: "jit", password: {{ index $users "jit" | toJSON }}, permissions: {publish: {allow: ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "events.session.*", "hb.worker.*", "hb.viewer.session.*", "$JS.API.STREAM.INFO.KV_sessions", "$JS.API.STREAM.MSG.GET.KV_sessions", "$JS.API.DIRECT.GET.KV_sessions", "$JS.API.DIRECT.GET.KV_sessions.>", "$JS.API.CONSUMER.CREATE.KV_sessions", "$JS.API.CONSUMER.CREATE.KV_sessions.>", "$JS.API.CONSUMER.INFO.KV_sessions.>", "$JS.API.CONSUMER.DELETE.KV_sessions.>", "$JS.API.CONSUMER.MSG.NEXT.KV_sessions.>", "$JS.ACK.KV_sessions.>", "$JS.FC.KV_sessions.>", "$JS.API.DIRECT.GET.HEARTBEATS.hb.worker.*"]}, subscribe: {allow: ["_INBOX.jit.>", "ctl.session.*", "ctl.signal.*"]}, allow_responses: true}}
              {user: "agent", password: {{ index $users "agent" | toJSON }}, permissions: {publish: {allow: ["$JS.API.INFO", "$JS.API.STREAM.NAMES", "hb.instance.*"]}, subscribe: {allow: ["_INBOX.agent.>", "ctl.agent.*"]}, allow_responses: true}}
            ]
          }
          http: "0.0.0.0:8222"
          {{ end -}}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 1024
      }
    }
  }
}
