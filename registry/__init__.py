"""Model cards and bundled default weights, installed as `refractor_registry`."""
