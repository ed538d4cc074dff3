"""The emitter: OpenLineage run events for every job, through the ``openlineage-python`` client.

A job run is a :class:`RunHandle`: ``start()``, then ``complete()`` or ``fail(exc)``.
Emission never raises: a transport that fails is logged (code ``LINEAGE_EMIT_FAILED``) and
the job carries on; the file transport is the durable record (docs/LINEAGE.md).
"""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any

from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import (
    InputDataset,
    Job,
    OutputDataset,
    Run,
    RunEvent,
    RunState,
)
from openlineage.client.facet_v2 import (
    dataset_version_dataset,
    datasource_dataset,
    error_message_run,
    job_type_job,
    output_statistics_output_dataset,
    parent_run,
    processing_engine_run,
    storage_dataset,
)
from openlineage.client.transport.transport import Transport
from openlineage.client.uuid import generate_new_uuid

from contracts import Contract
from lineage.config import LineageConfig, SettingsLike
from lineage.facets import (
    CONTRACT_FACET,
    PRODUCER,
    RUN_FACET,
    Assertion,
    PartitionRows,
    assertions_facet,
    contract_facet,
    run_facet,
    schema_facet,
)
from lineage.transport import make_transport

__all__ = [
    "FileOutput",
    "JobSpec",
    "LineageEmitter",
    "RunHandle",
    "RunRef",
    "SegmentInput",
    "TableDataset",
    "batch_run_id",
    "jobs",
]

log = logging.getLogger("energylake.lineage")
_RUN_ID_NS = uuid.UUID("6f1c2a4e-9d0b-5c8e-a3f1-0e2d4b6c8a10")


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job: its name in our namespace and its jobType facet."""

    name: str
    job_type: str
    processing_type: str = "BATCH"  # BATCH | STREAMING
    integration: str = "ENERGYLAKE"  # BEAM for the Beam pipeline


class jobs:  # noqa: N801 -- a namespace of job constructors
    """The platform's jobs. A new job (retention, erasure, extracts) is one more line."""

    @staticmethod
    def batch(pipeline_id: str) -> JobSpec:
        return JobSpec(f"process.{pipeline_id}", "MICRO_BATCH", "BATCH", "BEAM")

    @staticmethod
    def session(pipeline_id: str) -> JobSpec:
        return JobSpec(f"process.{pipeline_id}.session", "SESSION", "STREAMING", "BEAM")

    @staticmethod
    def compaction() -> JobSpec:
        return JobSpec("lake.compact", "COMPACTION")

    @staticmethod
    def reference_load() -> JobSpec:
        return JobSpec("reference.load", "REFERENCE_LOAD")

    @staticmethod
    def generic(name: str, job_type: str, *, integration: str = "ENERGYLAKE") -> JobSpec:
        """Any other job: ``generic("retention", "RETENTION")``, ``("extract.brsr", "EXTRACT")``."""
        return JobSpec(name, job_type, "BATCH", integration)


def batch_run_id(namespace: str, pipeline_id: str, batch_no: int) -> str:
    """Deterministic per batch: a retried batch keeps its run id (and its lineage)."""
    return str(uuid.uuid5(_RUN_ID_NS, f"{namespace}/process.{pipeline_id}/{batch_no}"))


@dataclass(frozen=True, slots=True)
class RunRef:
    """A run as a parent: its id and its job."""

    run_id: str
    namespace: str
    job_name: str


@dataclass(frozen=True, slots=True)
class SegmentInput:
    """A landing segment a batch read: namespace = the landing root, name = the segment."""

    landing_uri: str
    name: str

    def dataset(self) -> InputDataset:
        return InputDataset(namespace=self.landing_uri, name=self.name)


@dataclass(slots=True)
class TableDataset:
    """A Delta table in the lake (namespace = the lake URI, name = the table's path in it)."""

    lake_uri: str
    rel: str
    version: int | None = None
    contract: Contract | None = None
    tenant: str | None = None
    rows: int | None = None
    size_bytes: int | None = None
    files: int | None = None
    partitions: list[PartitionRows] = field(default_factory=list)
    assertions: list[Assertion] = field(default_factory=list)

    def _facets(self, *, with_contract: bool) -> dict[str, Any]:
        facets: dict[str, Any] = {
            "storage": storage_dataset.StorageDatasetFacet(
                storageLayer="delta", fileFormat="parquet"
            ),
            "dataSource": datasource_dataset.DatasourceDatasetFacet(
                name=self.lake_uri, uri=f"{self.lake_uri.rstrip('/')}/{self.rel}"
            ),
        }
        if self.version is not None:
            facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
                datasetVersion=str(self.version)
            )
        if self.contract is not None:
            facets["schema"] = schema_facet(self.contract)
            if with_contract:
                facets[CONTRACT_FACET] = contract_facet(
                    self.contract, tenant=self.tenant, partitions=self.partitions
                )
        return facets

    def output(self) -> OutputDataset:
        stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=self.rows, size=self.size_bytes, fileCount=self.files
        )
        return OutputDataset(
            namespace=self.lake_uri,
            name=self.rel,
            facets=self._facets(with_contract=True),
            outputFacets={"outputStatistics": stats},
        )

    def input(self) -> InputDataset:
        input_facets: dict[str, Any] = {}
        if self.assertions:
            input_facets["dataQualityAssertions"] = assertions_facet(self.assertions)
        return InputDataset(
            namespace=self.lake_uri,
            name=self.rel,
            facets=self._facets(with_contract=False),
            inputFacets=input_facets,
        )


@dataclass(frozen=True, slots=True)
class FileOutput:
    """A file a job wrote outside the lake (a purpose-shaped extract): namespace = its
    folder's URI, name = the file's name, version = the SHA-256 of its bytes."""

    folder_uri: str
    name: str
    sha256: str
    rows: int
    size_bytes: int
    file_format: str = "parquet"

    def output(self) -> OutputDataset:
        stats = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            rowCount=self.rows, size=self.size_bytes, fileCount=1
        )
        return OutputDataset(
            namespace=self.folder_uri,
            name=self.name,
            facets={
                "storage": storage_dataset.StorageDatasetFacet(
                    storageLayer="file", fileFormat=self.file_format
                ),
                "dataSource": datasource_dataset.DatasourceDatasetFacet(
                    name=self.folder_uri, uri=f"{self.folder_uri.rstrip('/')}/{self.name}"
                ),
                "version": dataset_version_dataset.DatasetVersionDatasetFacet(
                    datasetVersion=f"sha256:{self.sha256}"
                ),
            },
            outputFacets={"outputStatistics": stats},
        )


def _version_of(distribution: str) -> str:
    try:
        return package_version(distribution)
    except PackageNotFoundError:
        return "unknown"


class LineageEmitter:
    """Builds run events and hands them to the client (whose OPENLINEAGE_DISABLED it honours)."""

    def __init__(self, config: LineageConfig, *, transport: Transport | None = None) -> None:
        self.config = config
        self.client = OpenLineageClient(transport=transport or make_transport(config))
        self.failures = 0

    @classmethod
    def from_settings(cls, settings: SettingsLike) -> LineageEmitter:
        """The emitter the settings describe (lineage_transport, lineage_url, ...)."""
        return cls(LineageConfig.from_settings(settings))

    @property
    def disabled(self) -> bool:
        return self.client.transport.kind == "noop"

    def run(
        self,
        job: JobSpec,
        *,
        run_id: str | None = None,
        parent: RunRef | None = None,
    ) -> RunHandle:
        """A handle for one run of ``job`` (a fresh time-ordered id unless one is given)."""
        return RunHandle(self, job, run_id or str(generate_new_uuid()), parent)

    def batch(self, pipeline_id: str, batch_no: int, *, parent: RunRef | None = None) -> RunHandle:
        job = jobs.batch(pipeline_id)
        handle = self.run(
            job, run_id=batch_run_id(self.config.namespace, pipeline_id, batch_no), parent=parent
        )
        handle.run_info.update(pipeline_id=pipeline_id, batch_no=batch_no)
        return handle

    def emit(self, event: RunEvent) -> bool:
        """Send one event; False (logged, never raised) when the transport failed."""
        try:
            self.client.emit(event)
        except Exception as exc:  # lineage must never fail the job
            self.failures += 1
            log.error(
                "LINEAGE_EMIT_FAILED %s %s run %s: %s (the job carries on)",
                event.eventType.value if event.eventType else "?",
                event.job.name,
                event.run.runId,
                exc,
            )
            return False
        return True


class RunHandle:
    """One run of a job: START, then COMPLETE or FAIL (see :class:`LineageEmitter`)."""

    def __init__(
        self, emitter: LineageEmitter, job: JobSpec, run_id: str, parent: RunRef | None
    ) -> None:
        self.emitter = emitter
        self.job = job
        self.run_id = run_id
        self.parent = parent
        self.inputs: list[SegmentInput | TableDataset] = []
        self.outputs: list[TableDataset | FileOutput] = []
        self.run_info: dict[str, Any] = {}
        self.details: dict[str, Any] = {}
        """Anything else worth recording about the run (goes into the energylake_run facet)."""
        self.quality: str | None = None
        self._assertions: dict[str, list[Assertion]] = {}

    @property
    def ref(self) -> RunRef:
        return RunRef(self.run_id, self.emitter.config.namespace, self.job.name)

    def attach_quality(
        self,
        table_rel: str,
        assertions: Sequence[Assertion],
        *,
        outcome: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        """The gate's assertions for the rows bound for ``table_rel`` (and the batch outcome).

        They travel as the ``dataQualityAssertions`` input facet of that table's input entry
        in the next event (the batch reads the table's pinned snapshot to deduplicate).
        """
        self._assertions.setdefault(table_rel, []).extend(assertions)
        if outcome is not None:
            run_facet(quality=outcome)  # validates the outcome now, not at emit time
            self.quality = outcome
        if details:
            self.details.setdefault("quality", {}).update(details)

    def _run_facets(self, state: RunState, error: BaseException | None) -> dict[str, Any]:
        beam = self.job.integration == "BEAM"
        facets: dict[str, Any] = {
            "processing_engine": processing_engine_run.ProcessingEngineRunFacet(
                version=_version_of("apache-beam" if beam else "energylake"),
                name="Apache Beam" if beam else "energylake",
                openlineageAdapterVersion=_version_of("openlineage-python"),
            )
        }
        if self.parent is not None:
            job = parent_run.Job(namespace=self.parent.namespace, name=self.parent.job_name)
            run = parent_run.Run(runId=self.parent.run_id)
            facets["parent"] = parent_run.ParentRunFacet(
                run=run,
                job=job,
                root=parent_run.Root(
                    run=parent_run.RootRun(runId=self.parent.run_id),
                    job=parent_run.RootJob(
                        namespace=self.parent.namespace, name=self.parent.job_name
                    ),
                ),
            )
        if self.run_info or self.details or self.quality is not None:
            facets[RUN_FACET] = run_facet(
                pipeline_id=self.run_info.get("pipeline_id"),
                batch_no=self.run_info.get("batch_no"),
                segments=sum(isinstance(i, SegmentInput) for i in self.inputs) or None,
                quality=self.quality,
                details=self.details,
            )
        if error is not None and state == RunState.FAIL:
            facets["errorMessage"] = error_message_run.ErrorMessageRunFacet(
                message=f"{type(error).__name__}: {error}",
                programmingLanguage="PYTHON",
                stackTrace="".join(
                    traceback.format_exception(type(error), error, error.__traceback__)
                )[-8000:],
            )
        return facets

    def _event(self, state: RunState, error: BaseException | None = None) -> RunEvent:
        inputs = []
        for item in self.inputs:
            if isinstance(item, TableDataset) and item.rel in self._assertions:
                item.assertions = self._assertions[item.rel]
            inputs.append(item.dataset() if isinstance(item, SegmentInput) else item.input())
        known = {i.rel for i in self.inputs if isinstance(i, TableDataset)}
        for rel, found in self._assertions.items():  # checked but not read: still recorded
            if rel not in known:
                owner = next(
                    (o for o in self.outputs if isinstance(o, TableDataset) and o.rel == rel),
                    None,
                )
                lake = owner.lake_uri if owner else ""
                checked = TableDataset(lake, rel, contract=owner.contract if owner else None)
                checked.assertions = found
                if lake:
                    inputs.append(checked.input())
        job_facets: dict[str, Any] = {
            "jobType": job_type_job.JobTypeJobFacet(
                processingType=self.job.processing_type,
                integration=self.job.integration,
                jobType=self.job.job_type,
            )
        }
        return RunEvent(
            eventType=state,
            eventTime=datetime.now(UTC).isoformat(),
            run=Run(runId=self.run_id, facets=self._run_facets(state, error)),
            job=Job(namespace=self.emitter.config.namespace, name=self.job.name, facets=job_facets),
            inputs=inputs,
            outputs=[o.output() for o in self.outputs] if state != RunState.START else [],
            producer=PRODUCER,
        )

    def start(self, inputs: Sequence[SegmentInput | TableDataset] = ()) -> bool:
        self.inputs.extend(inputs)
        return self.emitter.emit(self._event(RunState.START))

    def complete(
        self,
        outputs: Sequence[TableDataset | FileOutput] = (),
        inputs: Sequence[SegmentInput | TableDataset] = (),
    ) -> bool:
        self.inputs.extend(inputs)
        self.outputs.extend(outputs)
        return self.emitter.emit(self._event(RunState.COMPLETE))

    def fail(self, error: BaseException) -> bool:
        return self.emitter.emit(self._event(RunState.FAIL, error))
