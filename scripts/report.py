"""Entry point that Snakemake calls for the report stage; the logic lives in eisbach.report."""

import sys

from eisbach.report import main

if __name__ == "__main__":
    main(sys.argv[1:])
