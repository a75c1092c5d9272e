"""Built-in readers of refractor (import name `refractor_plugins.readers`)."""
