"""Model updates over the fleet link: signed offers, chunked transfer, atomic install, health-gated
activation and rollback (docs/model-updates.md)."""
