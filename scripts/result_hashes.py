"""Prints the sha256 of every artefact under results/, or checks them against a list printed on
another machine (--check); the logic lives in eisbach.result_hashes."""

import sys

from eisbach.result_hashes import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
