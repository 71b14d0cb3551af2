"""mnistcli: train, evaluate and serve every classic family of MNIST model from one command."""

__version__ = "0.1.0"
