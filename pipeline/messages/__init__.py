"""Every message Tessera carries, one module per subject family; see ``docs/events.md``."""
