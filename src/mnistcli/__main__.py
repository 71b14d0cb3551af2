"""`python -m mnistcli` runs the same app as the `mnist` console script."""

from mnistcli.cli import main

main()
