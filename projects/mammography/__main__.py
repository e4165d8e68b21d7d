"""python -m projects.mammography [grid] [options]"""
import sys

from projects.mammography import cli

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv and argv[0] == "grid":
        sys.exit(cli.grid_main(argv[1:]))
    if argv and argv[0] == "run":
        argv = argv[1:]
    sys.exit(cli.main(argv))
