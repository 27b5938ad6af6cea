"""JobSettings read from the environment: a misspelt value stops the job at its start."""

import pytest

from pipelines.settings import JobSettings


def test_a_misspelt_gx_warm_up_stops_the_job_at_its_start():
    assert JobSettings.from_env({}).dq_gx_warm_up == "caught_up"
    assert JobSettings.from_env({"LIQSTREAM_DQ_GX_WARM_UP": "start"}).dq_gx_warm_up == "start"
    with pytest.raises(ValueError, match="LIQSTREAM_DQ_GX_WARM_UP"):
        JobSettings.from_env({"LIQSTREAM_DQ_GX_WARM_UP": "caughtup"})
