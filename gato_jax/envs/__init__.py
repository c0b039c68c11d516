"""Environment adapters, one module per domain; each imports its simulator only when used."""
