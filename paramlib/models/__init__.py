"""Models: vectorized RPN ensembles and MF-RPN (Bhouri et al. 2023), their normalisation
and their export as paramlib model files.

- `mlp`: `EnsembleMLP`, M stacked MLPs as one batched computation (M = 1: a plain MLP);
- `rpn`: `RPN` (trainable + fixed prior), `ensemble_mse`, `BootstrapSampler`;
- `mfrpn`: `MFRPN` with its three compositions, `mf_loss`, `mf_statistics`;
- `normalise`: `FieldLayout` (named fields <-> features), `Normaliser`, store helpers;
- `represent`: the feature kinds' input representation (raw, or climate-invariant rh and
  plume buoyancy), computed inside the model file; `thermo`: the moist thermodynamics it
  shares with the Bi-LSTM;
- `export_wrap`: `export_module`, a trained network -> scripted module + metadata.
"""

from paramlib.models.export_wrap import export_module
from paramlib.models.mfrpn import MFRPN, mf_loss, mf_statistics
from paramlib.models.mlp import EnsembleMLP
from paramlib.models.normalise import FieldLayout, Normaliser, store_fields, store_normalisation
from paramlib.models.rpn import RPN, BootstrapSampler, ensemble_mse

__all__ = [
    "RPN",
    "MFRPN",
    "BootstrapSampler",
    "EnsembleMLP",
    "FieldLayout",
    "Normaliser",
    "ensemble_mse",
    "export_module",
    "mf_loss",
    "mf_statistics",
    "store_fields",
    "store_normalisation",
]
