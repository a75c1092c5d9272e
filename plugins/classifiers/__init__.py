"""Built-in classifiers of refractor (import name `refractor_plugins.classifiers`)."""
