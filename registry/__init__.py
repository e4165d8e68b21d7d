"""The model registry: written policies (registry/policies/*.yaml) decide which registered
model version each alias points at; `python -m registry.promote` applies them after gates.

Works on runs and models through MLflow's API only; never imports training code.
"""
