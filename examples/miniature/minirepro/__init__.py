"""The miniature reproduction's stages: data, models, training, scoring and the report (see ../README.md)."""
