"""GPU-hours and cost of the paper grid: see eisbach/cloud.py."""

from eisbach.cloud import main

if __name__ == "__main__":
    main()
