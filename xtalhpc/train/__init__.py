"""Training: config (:mod:`.config`), models (:mod:`.models`), data (:mod:`.data`),
augmentation (:mod:`.augment`), the checkpointable task (:mod:`.task`), the submitit
launcher (:mod:`.launch`) and the model file (:mod:`.modelfile`). docs/training.md.

Nothing here imports torch at import time of this package; the submodules that need it
import it themselves.
"""
