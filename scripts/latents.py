"""Entry point that Snakemake calls for the latents stage; the logic lives in eisbach.latents."""

import sys

from eisbach.latents import main

if __name__ == "__main__":
    main(sys.argv[1:])
