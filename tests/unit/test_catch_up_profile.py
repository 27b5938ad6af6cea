"""bench.catch_up_profile's summary of py-spy's raw output: samples split by process kind."""

from bench.catch_up_profile import summarize

JOB = 'process 10:"python -m bench.catch_up_profile"'
READER = 'process 11:"python -c from multiprocessing.spawn import spawn_main"'


def test_samples_are_split_into_readers_the_jobs_thread_and_its_other_threads():
    lines = [
        f"{JOB};{READER};<module> (<string>:1);_fetch_chunk (connectors/kafka/fetch.py:187) 300",
        f"{JOB};{READER};<module> (<string>:1);_worker_init (connectors/kafka/fetch.py:160) 50",
        f"{JOB};<module> (catch_up_profile.py:110);run_events_pass (pipelines/events_pass.py:276) 120",
        f"{JOB};Thread._bootstrap (threading.py:1002);_load_gx (pipelines/dq/__init__.py:91) 80",
        "not a sample line",
    ]
    out = summarize(lines, rate=100)
    assert out["seconds_by_process"] == {"reader processes": 3.5, "job: main thread": 1.2, "job: other threads": 0.8}
    frames = {(k, f): s for k, f, s in out["top_frames"]}
    assert frames[("reader processes", "<module> (<string>:1)")] == 3.5
    assert frames[("reader processes", "_fetch_chunk (connectors/kafka/fetch.py:187)")] == 3.0
    assert frames[("job: main thread", "run_events_pass (pipelines/events_pass.py:276)")] == 1.2
    assert frames[("job: other threads", "_load_gx (pipelines/dq/__init__.py:91)")] == 0.8
