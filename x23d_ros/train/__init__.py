"""`x23d train` and `x23d export`: resumable training of the X23D network on shards.

Two stages, as X23D (Jecklin et al. 2022) and shared/DESIGN.md §1:

- `coarse`: a multi-class grid (background, L1..L5) centred at the isocentre estimated from the
  shots' principal rays, as the Reconstructor places it; it localises the levels.
- `fine`: per vertebra, a grid centred on the vertebra's bounding box (plus a random offset
  the size of the coarse stage's error), fed by crops of each view around the vertebra's
  projection, cut at the shot's own resolution, with P adjusted by the crop; binary
  occupancy of that vertebra. Several levels of one case form one batch, as at inference.

Modules: `config` (TrainConfig, schedule), `batches` (augmentations, then the networks'
inputs through `model.inputs`), `loss`, `validation`, `loop` (resumable and distributed
training, checkpoints), `curve`, `export` (weights files) and `cli`.
"""

from x23d_ros.train.batches import centre_offset, draw_views, grid_labels, make_batch
from x23d_ros.train.cli import add_arguments, config_from_args, run
from x23d_ros.train.config import STAGES, TrainConfig, default_net, learning_rate
from x23d_ros.train.export import add_export_arguments, export_weights, run_export
from x23d_ros.train.loop import initial_state, train

__all__ = [
    "STAGES",
    "TrainConfig",
    "add_arguments",
    "add_export_arguments",
    "centre_offset",
    "config_from_args",
    "default_net",
    "draw_views",
    "export_weights",
    "grid_labels",
    "initial_state",
    "learning_rate",
    "make_batch",
    "run",
    "run_export",
    "train",
]
