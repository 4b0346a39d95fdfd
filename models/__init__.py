"""tradedesk models: torch networks, replay buffers, trainers, labelling, checkpoints.

Never imports textual, and never imports ``engine`` (the engine feeds the models
numpy arrays shaped as :mod:`models.common.schema` describes).
"""
