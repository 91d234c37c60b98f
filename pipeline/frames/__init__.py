"""The frame bus between grabbers and stitchers: the shared-memory slot beside NATS."""
