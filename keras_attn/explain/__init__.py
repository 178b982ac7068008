"""`python -m keras_attn.explain RUN_OR_MODEL INPUT...`: what a trained model predicts and
where it looks, one figure per input.

- `source`: the model of a run directory (or a `.keras` file) and what its run recorded;
- `inputs`: which files an image or video model can take;
- `predictions`: top-k classes and `predictions.csv`;
- `figures`: the per-input result, heat overlays, PNG output;
- `image`: an image model's attention maps and Grad-CAM over each input;
- `video`, `encoder`: a video model's frame weights over a filmstrip of the sampled frames,
  with the frame encoder rebuilt from the run's config when `best.keras` is only the head.
"""
