"""Entry point that Snakemake calls for the figures stage; the logic lives in eisbach.figures."""

import sys

from eisbach.figures import main

if __name__ == "__main__":
    main(sys.argv[1:])
