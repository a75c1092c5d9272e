"""Built-in rankers of refractor (import name `refractor_plugins.rankers`)."""
