"""python -m pipeline [--profile quick|smoke|paper]  (the MLproject `main` entry point)"""
import sys

from pipeline.main import main

sys.exit(main())
