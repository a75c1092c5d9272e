"""Built-in plugins of refractor, installed as `refractor_plugins`."""
