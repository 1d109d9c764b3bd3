"""Test fixtures: tiny, randomly initialised but architecturally real checkpoints (`tiny:<family>` model ids).

Not on the production import path: core.training.models imports this package only when a `tiny:` id is loaded."""
