"""The training engine: one loop that knows no model family, its callbacks, optimizers, device and seeding."""
