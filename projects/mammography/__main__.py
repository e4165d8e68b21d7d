"""python -m projects.mammography [run|grid] [options]"""
import sys

from projects.core import entry
from projects.mammography.study import STUDY

if __name__ == "__main__":
    sys.exit(entry.main_for(STUDY))
