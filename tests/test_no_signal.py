"""A run whose rewards never tell the completions of a group apart says so.

Identical rewards in every group give zero advantages and no gradient (`grad_norm` 0, an unchanged adapter) while the
run otherwise looks healthy; `core.training.trainer.NoSignalWatch` warns once after a few such generation batches in a
row and
the trainer reports at the end how many batches had no signal.
"""

from __future__ import annotations

import logging

import pytest

from core.training.trainer import NoSignalWatch
from tests.test_run_guards import grounding_rows, tiny_trainer  # noqa: F401  (module-scoped fixture)


def test_watch_warns_once_after_batches_in_a_row_and_counts_all(caplog):
    watch = NoSignalWatch(warn_after=2)
    with caplog.at_level(logging.WARNING, logger="core.training.trainer"):
        watch.update(1.0, {"acc": 0.0})
        watch.update(0.5, {"acc": 0.3})  # one group with signal breaks the streak
        watch.update(1.0, {"acc": 0.0})
        assert not caplog.records
        watch.update(1.0, {"acc": 0.0})
        watch.update(1.0, {"acc": 0.0})
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "no learning signal: in 2 generation batches in a row" in message and "acc std 0" in message
    assert watch.summary() == (
        "4 of 5 generation batches had no learning signal (identical rewards in every group, zero advantages)"
    )


def test_watch_is_silent_when_every_batch_has_signal():
    watch = NoSignalWatch()
    for _ in range(5):
        watch.update(0.25, {"acc": 0.4})
    assert watch.summary() is None and not watch.warned


def constant(completions, **kwargs):
    return [1.0] * len(completions)


def by_length(completions, **kwargs):
    return [float(len(str(c))) for c in completions]


@pytest.mark.slow
def test_a_run_with_identical_rewards_warns_and_reports_it(tmp_path, grounding_rows, caplog):  # noqa: F811
    trainer = tiny_trainer(tmp_path, grounding_rows, [constant], max_steps=3)
    with caplog.at_level(logging.WARNING, logger="core.training.trainer"):
        trainer.train()
    messages = [r.getMessage() for r in caplog.records if r.name == "core.training.trainer"]
    assert any(m.startswith("no learning signal: in 3 generation batches in a row") for m in messages), messages
    assert (
        "3 of 3 generation batches had no learning signal (identical rewards in every group, zero advantages): "
        "the rewards never moved the policy" in messages
    )


@pytest.mark.slow
def test_a_run_whose_rewards_differ_within_groups_says_nothing(tmp_path, grounding_rows, caplog):  # noqa: F811
    trainer = tiny_trainer(tmp_path, grounding_rows, [by_length], max_steps=2, temperature=1.5)
    with caplog.at_level(logging.WARNING, logger="core.training.trainer"):
        trainer.train()
    assert trainer.no_signal.batches == 2 and trainer.no_signal.total == 0
    assert not [r for r in caplog.records if "no learning signal" in r.getMessage()]
