"""Direction Coordinator: node registry, VIP pool, route decisions, DNS for its zone."""
