"""The built-in evaluators, one file or small folder each; the framework they run in (interface, runner, passes,
records, outcomes, metrics) is ``mmix_eval.evaluate``, which imports none of them. Listed in
``mmix_eval.catalog.EVALUATORS`` and found by name through it:

- ``deformations/``: rotation, shear and zoom as the paper's Table 4 (``geometry.py``: the warps, ``grids.py``:
  the named grids);
- ``attacks/``: FGSM (``fgsm.py``) and the other white-box attacks (``attack.py``), both through
  ``adversarial.py``'s ``WhiteBoxAttack``;
- ``calibration.py``: reliability and calibration errors on the clean test images;
- ``corruptions/``: CIFAR-10-C style corruptions (``corrupt.py``: the functions exact to the official code,
  ``table.py``: their parameters, ``files.py``: the distributed files);
- ``ood.py``: out-of-distribution detection; ``shift.py``: natural distribution shift; ``spectra.py``: the
  singular values of hidden representations.
"""
