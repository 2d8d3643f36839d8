"""Entry point that Snakemake calls for the sample stage; the logic lives in eisbach.sample."""

import sys

from eisbach.sample import main

if __name__ == "__main__":
    main(sys.argv[1:])
