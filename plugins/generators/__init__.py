"""Built-in generators of refractor (import name `refractor_plugins.generators`)."""
