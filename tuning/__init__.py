"""Keras Tuner searches over the image and video experiments: `python -m tuning image|video`.

`tuning.hypermodels` holds the HyperModels (calling the training scripts' builders)
and their search spaces, `tuning.space` the space description, `tuning.search` the
recording tuners and distributed mode, `tuning.results` the trials table. See
`tuning/__main__.py` for the command line.
"""
