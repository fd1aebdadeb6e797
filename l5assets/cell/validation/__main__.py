"""`python -m l5assets.cell.validation --worker JSON`: the NEURON worker process."""

import sys

from l5assets.cell.validation.worker import _main

if __name__ == "__main__":
    sys.exit(_main())
