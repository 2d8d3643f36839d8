"""Entry point that Snakemake calls for the evaluate stage; the logic lives in eisbach.evaluate."""

import sys

from eisbach.evaluate import main

if __name__ == "__main__":
    main(sys.argv[1:])
