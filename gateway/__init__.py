"""The HTTP gateway: routes, request models, pipeline, providers, config and CLI."""
