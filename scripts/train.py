"""Entry point that Snakemake calls for the train stage; the logic lives in eisbach.train."""

import sys

from eisbach.train import main

if __name__ == "__main__":
    main(sys.argv[1:])
