"""Entry point that Snakemake calls for the data stage; the logic lives in eisbach.data."""

import sys

from eisbach.data import main

if __name__ == "__main__":
    main(sys.argv[1:])
