"""Test fixtures: tiny, randomly initialised but architecturally real checkpoints (`tiny:<family>` model ids), one
family per module in core.testing.tiny.

Not on the production import path: production code checks model ids with core.training.model_ids, which imports this
package only when a `tiny:` id is resolved (tests/test_layout.py checks it)."""
