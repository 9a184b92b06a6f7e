"""HTTP route modules; each has register(app, services)."""
