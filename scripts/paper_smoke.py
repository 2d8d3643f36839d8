"""Makes the local inputs of config/paper-smoke.yaml; the logic lives in eisbach.paper_smoke."""

import sys

from eisbach.paper_smoke import main

if __name__ == "__main__":
    main(sys.argv[1:])
