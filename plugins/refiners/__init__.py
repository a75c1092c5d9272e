"""Built-in refiners of refractor (import name `refractor_plugins.refiners`)."""
