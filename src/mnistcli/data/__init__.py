"""The data layer: IDX files, the MNIST dataset, and user images, all as numpy (never torch)."""
