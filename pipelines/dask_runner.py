"""Beam's DaskRunner, fitted for the backfill's bounded graph (docs/adr/017).

``apache_beam.runners.dask.dask_runner.DaskRunner`` (apache-beam 2.77) translates a pipeline into
``dask.bag`` operations and submits them to a ``dask.distributed`` scheduler. As shipped it cannot
run the backfill's graph correctly; this runner keeps its translation of Create, GroupByKey and
Flatten, adds Impulse, and mends four things, each found on the backfill's graph:

* only the LAST visited transform's bag is computed: a graph with several sinks (bars, late events,
  liquidation minutes, counts) ran one of them. Every leaf bag is computed here.
* a multi-output ParDo (``with_outputs``) hands ALL its outputs, main and tagged, to every
  consumer. Each consumer here receives only the output it reads.
* a bundle's outputs are collected before ``finish_bundle``, so what a DoFn emits there (the bars'
  per-bundle split) was lost; and the receivers are shared by the tasks of a worker. Each task here
  builds its own DoFn copy and receivers and collects after ``finish_bundle``.
* a side input is a bag computed INSIDE the consuming task (the multiprocessing scheduler, inside
  a daemonic worker). Here it is a dependency of the task, materialized once by Dask.

It also reuses one ``distributed.Client`` for every pipeline of a run (the stock runner opens one
per pipeline and never closes it), puts each created work item in its own partition (the stock
default packs up to 128 items into one partition: a backfill's few work items all ran on one
worker), and forces the task-based shuffle (the disk shuffle writes local files: wrong across hosts).
Beam metrics are not collected on Dask: counts travel as rows instead.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import logging
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.internal import pickler
from apache_beam.pipeline import AppliedPTransform, PipelineVisitor
from apache_beam.runners.runner import PipelineResult, PipelineRunner, PipelineState

log = logging.getLogger(__name__)


class DaskSchedulerUnreachable(RuntimeError):
    """No Dask scheduler answered at the address within the connect timeout."""


def connect(address: str, timeout_s: float):
    """A ``distributed.Client`` on ``address``; :class:`DaskSchedulerUnreachable` naming the address
    when nothing answers within ``timeout_s`` (distributed retries until then)."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        raise DaskSchedulerUnreachable(
            f"no Dask scheduler answered at {address} within {timeout_s:g}s ({type(exc).__name__}: {exc})"
        ) from exc


def _bundle(items, fn_bytes: bytes, label: str, window_fn, args, kwargs, side_specs, *side_values):
    """One Dask partition = one Beam bundle: a fresh DoFn copy and receivers per task."""
    from apache_beam.runners.common import DoFnContext, DoFnInvoker, DoFnSignature, _OutputHandler
    from apache_beam.runners.dask.transform_evaluator import OneReceiver, get_windowed_value
    from apache_beam.transforms.sideinputs import SideInputMap

    fn = pickler.loads(fn_bytes)
    receivers = OneReceiver()
    side_inputs = [SideInputMap(view, options, [get_windowed_value(v, wfn) for v in values])
                   for (view, options, wfn), values in zip(side_specs, side_values, strict=True)]
    invoker = DoFnInvoker.create_invoker(
        DoFnSignature(fn),
        _OutputHandler(window_fn=window_fn, main_receivers=receivers[None], tagged_receivers=receivers,
                       per_element_output_counter=None, output_batch_converter=None,
                       process_yields_batches=False, process_batch_yields_elements=False),
        context=DoFnContext(label, state=None), side_inputs=side_inputs or None, input_args=list(args),
        input_kwargs=kwargs, user_state_context=None, bundle_finalizer_param=beam.DoFn.BundleFinalizerParam())
    invoker.invoke_setup()
    invoker.invoke_start_bundle()
    for item in items:
        invoker.invoke_process(get_windowed_value(item, window_fn))
    invoker.invoke_finish_bundle()
    invoker.invoke_teardown()
    # values without their windows (bounded graph: one global window); a tagged output keeps its tag
    return [pvalue.TaggedOutput(v.tag, v.value.value) if isinstance(v, pvalue.TaggedOutput) else v.value
            for v in receivers.values]


def _concat(*parts):
    return [x for part in parts for x in part]


def _main_output(item) -> bool:
    return not isinstance(item, pvalue.TaggedOutput)


def _tagged_output(item, tag: str) -> bool:
    return isinstance(item, pvalue.TaggedOutput) and item.tag == tag


def _untag(item):
    return item.value if isinstance(item, pvalue.TaggedOutput) else item


@dataclasses.dataclass
class _BagVisitor(PipelineVisitor):
    partition_size: int
    bags: dict[AppliedPTransform, Any] = dataclasses.field(default_factory=collections.OrderedDict)
    consumed: set[AppliedPTransform] = dataclasses.field(default_factory=set)

    def _input_bag(self, pcoll):
        producer = pcoll.producer
        self.consumed.add(producer)
        bag = self.bags[producer]
        tags = getattr(producer.transform, "output_tags", None)
        if not tags:
            return bag
        if pcoll.tag in tags:  # a tagged output: only its items
            return bag.filter(functools.partial(_tagged_output, tag=pcoll.tag)).map(_untag)
        return bag.filter(_main_output)

    def visit_transform(self, node: AppliedPTransform) -> None:
        import dask.bag as db
        from apache_beam.runners.dask import overrides, transform_evaluator

        t = node.transform
        inputs = [self._input_bag(i) for i in node.inputs if not isinstance(i, pvalue.PBegin)]
        if isinstance(t, overrides._GroupAlsoByWindow):  # the grouping op already gathered the values
            bag = inputs[0]
        elif isinstance(t, overrides._Create):
            bag = db.from_sequence(list(t.values) or [], partition_size=self.partition_size)
        elif isinstance(t, beam.Impulse):  # one empty-bytes element (the analytics' run-time listings, ADR 045)
            bag = db.from_sequence([b""], partition_size=self.partition_size)
        elif isinstance(t, beam.ParDo):
            bag = self._par_do(node, inputs[0])
        elif isinstance(t, overrides._Flatten):
            bag = db.concat(inputs)
        elif isinstance(t, overrides._GroupByKeyOnly):
            bag = transform_evaluator.GroupByKey(node).apply(inputs[0])
        elif len(inputs) == 1:  # identities: _Reshuffle (Dask places the partitions itself)
            bag = inputs[0]
        else:
            raise NotImplementedError(f"the Dask runner cannot translate {t!r} ({node.full_label})")
        self.bags[node] = bag

    def _par_do(self, node: AppliedPTransform, input_bag):
        import dask

        t = node.transform
        args, kwargs = t.args, t.kwargs  # side inputs as placeholders the invoker fills (raw: the views)
        main = next(iter(node.main_inputs.values()))
        window_fn = main.windowing.windowfn if hasattr(main, "windowing") else None
        specs, values = [], []
        for si in node.side_inputs:
            self.consumed.add(si.pvalue.producer)
            specs.append((type(si), si._view_options(), si._window_mapping_fn))
            whole = self._input_bag(si.pvalue)
            values.append(dask.delayed(_concat)(*whole.to_delayed(optimize_graph=False)))
        return input_bag.map_partitions(_bundle, pickler.dumps(t.fn), t.label, window_fn, list(args),
                                        kwargs, specs, *values) if values else \
            input_bag.map_partitions(_bundle, pickler.dumps(t.fn), t.label, window_fn, list(args), kwargs, [])

    def leaves(self) -> list:
        return [bag for node, bag in self.bags.items() if node not in self.consumed]


class _Result(PipelineResult):
    """The leaves' futures; a failed task (after Dask's retries) raises here, in the client."""

    def __init__(self, client, futures: list) -> None:
        super().__init__(PipelineState.RUNNING)
        self.client, self.futures = client, futures

    def wait_until_finish(self, duration=None) -> str:
        from distributed import as_completed

        try:
            # results are gathered one by one (the sinks' leaves are empty lists): that raises a
            # task's error here, which waiting alone would not
            for _ in as_completed(self.futures, loop=self.client.loop, with_results=True,
                                  timeout=None if duration is None else duration / 1000):
                pass
        except BaseException:
            self._state = PipelineState.FAILED
            self.client.cancel(self.futures)
            raise
        self._state = PipelineState.DONE
        return self._state

    def cancel(self) -> str:
        self.client.cancel(self.futures)
        self._state = PipelineState.CANCELLED
        return self._state

    def metrics(self):
        raise NotImplementedError("Beam metrics are not collected on Dask: counts travel as rows")


class BackfillDaskRunner(PipelineRunner):
    """Runs bounded pipelines on the Dask cluster of ``client`` (see the module docstring)."""

    def __init__(self, client, partition_size: int = 1) -> None:
        self.client = client
        self.partition_size = partition_size

    @staticmethod
    def is_fnapi_compatible() -> bool:
        return False

    def run_pipeline(self, pipeline, options):
        import dask
        from apache_beam.runners.dask.overrides import dask_overrides

        pipeline.replace_all(dask_overrides())
        visitor = _BagVisitor(self.partition_size)
        # the task shuffle keeps a GroupByKey's data in worker memory; "disk" writes local files
        with dask.config.set({"dataframe.shuffle.method": "tasks"}):
            pipeline.visit(visitor)
        return _Result(self.client, self.client.compute(visitor.leaves()))
