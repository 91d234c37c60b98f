"""Where media comes from: opening user-given URLs safely, and synthetic live sources."""
