"""Model architectures, one per file; importing this package registers them all.

The import order is the order `mnist models` lists them: simplest first.
"""

# isort: off
from mnistcli.models import linear, mlp, lenet, cnn, simclr, siamese, adder, mil, ensemble  # noqa: F401
# isort: on
