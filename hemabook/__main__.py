"""`python -m hemabook`: the `hemabook` command line; torchrun starts each process of a multi-GPU run this way."""
import sys

from hemabook.runner import main

if __name__ == '__main__': sys.exit(main())
