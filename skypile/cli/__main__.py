"""``python -m skypile.cli``: the same as the ``skypile`` console script (torchrun uses it)."""

from skypile.cli import main

main()
