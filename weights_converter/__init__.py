"""PyTorch VGG-19 checkpoint -> nst_jax parameter file, without torch: ``python -m weights_converter``.

Modules: :mod:`weights_converter.pth_reader` (``read_state_dict``, a restricted unpickler),
:mod:`weights_converter.convert` (``to_flax``, ``convert``), :mod:`weights_converter.download`. Nothing is
imported here, so ``python -m weights_converter`` reports flag errors without first importing JAX.
"""
