"""python -m projects.pathology [run|grid] [options]"""
import sys

from projects.core import entry
from projects.pathology.study import STUDY

if __name__ == "__main__":
    sys.exit(entry.main_for(STUDY))
