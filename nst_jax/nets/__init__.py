"""Feed-forward style-transfer networks (Flax): :mod:`~nst_jax.nets.johnson` (one style per network) and
:mod:`~nst_jax.nets.adain` (any style, with the frozen VGG-19 encoder), and their model files
(:mod:`~nst_jax.nets.model_file`).

:data:`NETS` names the kinds ``--net`` takes.
"""

NETS: tuple[str, ...] = ("johnson", "adain")
