"""Built-in encoders of refractor (import name `refractor_plugins.encoders`)."""
