"""Training-only code: losses and (later) the Lightning modules that wrap the pure networks (spec §7)."""
