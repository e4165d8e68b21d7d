"""The main job: every study's grid, the searches, promotion, dashboards and a summary.

The top layer of the platform: it may import everything below it (core, studies, search,
registry, dashboards); nothing imports it.
"""
