"""The cycle's Beam options keep each view once made (ADR 043), and the views share its values."""

from __future__ import annotations

from apache_beam.options.pipeline_options import DirectOptions, StandardOptions, TypeOptions

from pipelines.jobs.load import _runner_options
from pipelines.settings import JobSettings


def test_a_view_is_made_once_and_shares_the_options_values():
    options = _runner_options(JobSettings(workers=3))
    types = options.view_as(TypeOptions)
    assert options.view_as(TypeOptions) is types
    assert options.view_as(DirectOptions).direct_num_workers == 3
    assert options.view_as(DirectOptions).direct_running_mode == "in_memory"
    types.pipeline_type_check = False  # set through one view: seen by every view and by the object
    assert options.view_as(TypeOptions).pipeline_type_check is False
    assert options.get_all_options()["pipeline_type_check"] is False
    options.view_as(StandardOptions).runner = "DirectRunner"
    assert options.get_all_options()["runner"] == "DirectRunner"


def test_each_cycle_gets_its_own_options():
    first, second = _runner_options(JobSettings()), _runner_options(JobSettings())
    first.view_as(TypeOptions).pipeline_type_check = False
    assert second.view_as(TypeOptions).pipeline_type_check is True
