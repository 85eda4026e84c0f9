"""Training-only code: dataset preparation, losses and the Lightning modules that wrap the pure networks
(docs/architecture.md §7)."""
