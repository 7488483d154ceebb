"""The user-facing layer: :class:`~loftr_core.api.matcher.Matcher`, weights and checkpoints,
image I/O, geometry (relative pose) and match plots. It builds on the model layer and never
reaches into the execution layer's internals."""
