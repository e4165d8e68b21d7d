"""Study 1: mammogram classification on mini-MIAS (data layer, splits, models, metrics)."""
