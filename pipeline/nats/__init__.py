"""The NATS layer: the embedded server, its users, the topology of streams and buckets, subject
names, connecting, appending events, and heartbeats."""
