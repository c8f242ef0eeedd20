"""The run layer: from a run's settings to a trained, evaluated model.

- `config`: `TrainConfig` (every setting with its one default and help),
  validation, resume policy.
- `flags`: the command-line flags generated from `TrainConfig`.
- `build`: strategy, trainer, optimizer, callbacks, prerequisite runs.
- `execute`: `run`, one resumable `fit`, then the final evaluation.

Example:

```python
from he_keras.runs import TrainConfig, run

metrics = run(TrainConfig(framework="trades", epochs=3, output_dir="/tmp/trades"))
```
"""

from he_keras.runs.config import TrainConfig
from he_keras.runs.execute import run

__all__ = ["TrainConfig", "run"]
