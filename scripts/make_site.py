"""Writes a site file (site.yaml) and checks it against the config schema: see eisbach/site.py."""

from eisbach.site import main

if __name__ == "__main__":
    main()
